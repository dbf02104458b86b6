"""loyalcast's own dramatiq middleware: log context per message, runtime cleanup."""

from __future__ import annotations

from typing import Any

import structlog
from dramatiq.middleware import Middleware

from .runtime import Runtime

__all__ = ["RuntimeLifecycle"]


class RuntimeLifecycle(Middleware):
    """Binds the message to the log context and closes the runtime at shutdown."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def before_process_message(self, broker: Any, message: Any) -> None:
        structlog.contextvars.bind_contextvars(
            actor=message.actor_name, message_id=message.message_id
        )

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        structlog.contextvars.clear_contextvars()

    def after_skip_message(self, broker: Any, message: Any) -> None:
        structlog.contextvars.clear_contextvars()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        self.runtime.close()
