"""``python -m bench``: see :mod:`bench.cli`."""

import sys

from loyalcast.logging import configure_logging

from .cli import main

# Jobs that run in this process (scenario deliver) log as the workers do, at
# WARNING: their INFO lines would interleave with the tables.
configure_logging("WARNING")
sys.exit(main())
