"""Workers: the dramatiq broker and the actors that plan, deliver and sweep.

- :mod:`workers.campaigns`: campaign files and their validation.
- :mod:`workers.planning`: ``plan(run)`` writes delivery rows (the outbox).
- :mod:`workers.delivery`: ``deliver(batch)`` applies policy, renders, sends, records.
- :mod:`workers.sweeping`: ``sweep()`` repairs what a crash or a lost Redis left.
- :mod:`workers.broker`, :mod:`workers.actors`, :mod:`workers.main`: dramatiq wiring.

Imports store, segments, templates and channels (and ``loyalcast.settings``).
"""

from .broker import close_broker, make_broker
from .campaigns import CampaignFileError, CampaignSpec, parse_campaign
from .jobs import enqueue_deliver, enqueue_plan, enqueue_sweep
from .runtime import Runtime, build_channels

__all__ = [
    "CampaignFileError",
    "CampaignSpec",
    "Runtime",
    "build_channels",
    "close_broker",
    "enqueue_deliver",
    "enqueue_plan",
    "enqueue_sweep",
    "make_broker",
    "parse_campaign",
]
