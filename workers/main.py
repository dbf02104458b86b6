"""The module ``dramatiq`` workers load (``loyalcast worker`` runs ``dramatiq workers.main``).

Importing it reads the settings, builds the broker, declares the actors and
registers the middleware that closes the runtime when the worker stops and
freezes what the process loaded before its threads start
(:func:`workers.middleware.freeze_boot_objects`).
"""

from __future__ import annotations

import dramatiq

from loyalcast.settings import Settings

from .actors import declare_actors
from .broker import make_broker
from .middleware import FrozenBoot, RuntimeLifecycle
from .runtime import Runtime

settings = Settings.from_env()
broker = make_broker(settings)
runtime = Runtime(settings, broker)
broker.add_middleware(RuntimeLifecycle(runtime))
broker.add_middleware(FrozenBoot())
dramatiq.set_broker(broker)
actors = declare_actors(broker, runtime)

__all__ = ["actors", "broker", "runtime"]
