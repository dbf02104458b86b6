"""The module ``dramatiq`` workers load (``loyalcast worker`` runs ``dramatiq workers.main``).

Importing it reads the settings, builds the broker, declares the actors and
registers the middleware that closes the runtime when the worker stops.
"""

from __future__ import annotations

import dramatiq

from loyalcast.settings import Settings

from .actors import declare_actors
from .broker import make_broker
from .middleware import RuntimeLifecycle
from .runtime import Runtime

settings = Settings.from_env()
broker = make_broker(settings)
runtime = Runtime(settings, broker)
broker.add_middleware(RuntimeLifecycle(runtime))
dramatiq.set_broker(broker)
actors = declare_actors(broker, runtime)

__all__ = ["actors", "broker", "runtime"]
