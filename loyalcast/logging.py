"""structlog configuration for the CLI processes: key=value lines on stderr.

Values under keys that look like secrets are replaced by ``***`` before they
are rendered, so a token or password handed to a log call never reaches a log.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["QUIET_LIBRARIES", "SECRET_KEYS", "configure_logging", "redact_secrets"]

QUIET_LIBRARIES = ("alembic", "apscheduler")

SECRET_KEYS = ("password", "secret", "token", "api_key", "auth", "authorization", "private_key")


def redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor that masks values whose key names a secret."""
    for key in list(event):
        if any(word in key.lower() for word in SECRET_KEYS):
            event[key] = "***"
    return event


def configure_logging(level: str = "INFO") -> None:
    """Route structlog and stdlib logging to stderr at ``level``."""
    logging.basicConfig(stream=sys.stderr, level=level, format="%(message)s")
    # Libraries that narrate routine work at INFO: only their warnings matter here.
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"]),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
