"""The scheduler: one leader (a Redis lock with renewal) claims due work and enqueues actors.

:class:`SchedulerService` is the process; :func:`tick` one claim pass;
:class:`LeaderLock` the lock. Imports store, segments and workers.
"""

from .leader import LeaderLock
from .service import JOB_DEFAULTS, SchedulerService
from .ticks import claim_due_runs, tick

__all__ = ["JOB_DEFAULTS", "LeaderLock", "SchedulerService", "claim_due_runs", "tick"]
