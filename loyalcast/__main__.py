"""``python -m loyalcast``: the same as the ``loyalcast`` command."""

from loyalcast.cli import main

main()
