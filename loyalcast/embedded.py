"""Everything on one machine: a private Redis (unless one is configured) and a worker group.

Used by ``loyalcast run`` and ``loyalcast demo``. Leaving the ``with`` block
stops the workers (SIGTERM to their process group, SIGKILL after a grace
period) and then the private Redis, whether the block ended normally, with an
error or with Ctrl-C.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

from loyalcast.processes import PrivateRedis, WorkerGroup
from loyalcast.settings import Settings

__all__ = ["Embedded", "channel_lines", "child_env"]


def channel_lines(settings: Settings) -> list[str]:
    """One line per channel saying whether it is live or writes to the outbox (and where)."""
    from workers import build_channels

    lines = []
    for name, channel in build_channels(settings).items():
        mode = "live" if channel.live else f"outbox ({settings.effective_outbox_dir / name}.jsonl)"
        lines.append(f"channel {name}: {mode}")
        channel.close()
    return lines


def child_env(settings: Settings, redis_url: str) -> dict[str, str]:
    """The environment for a child process with exactly these settings, this store and Redis.

    Every loyalcast variable of the parent's environment is dropped first, so a
    setting the parent cleared (the demo clears provider credentials) stays
    cleared in the child.
    """
    ours = {env for env, _, _ in Settings.documented()}
    env = {k: v for k, v in os.environ.items() if k not in ours}
    env.update(settings.to_env())
    env["LOYALCAST_DATABASE_URL"] = settings.effective_database_url
    env["LOYALCAST_OUTBOX_DIR"] = str(settings.effective_outbox_dir.resolve())
    env["LOYALCAST_REDIS_URL"] = redis_url
    return env


class Embedded:
    """A context manager owning a private Redis and ``dramatiq`` workers."""

    def __init__(
        self,
        settings: Settings,
        *,
        processes: int | None = None,
        threads: int | None = None,
        log_file: Path | None = None,
    ) -> None:
        self.settings = settings
        self.processes = processes or settings.worker_processes
        self.threads = threads or settings.worker_threads
        self.log_file = log_file
        self.redis = PrivateRedis()
        self.workers: WorkerGroup | None = None
        self.redis_url = ""

    def __enter__(self) -> Embedded:
        try:
            self.redis_url = self.settings.redis_url or self.redis.start()
            self.workers = WorkerGroup(
                child_env(self.settings, self.redis_url),
                processes=self.processes,
                threads=self.threads,
                log_file=self.log_file,
            )
            self.workers.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers, then the private Redis; safe to call twice."""
        try:
            if self.workers is not None:
                self.workers.stop()
                self.workers = None
        finally:
            self.redis.stop()
