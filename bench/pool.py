"""Worker processes for a measured run: ours (``dramatiq workers.main``) or the naive baseline's.

Both are :class:`loyalcast.processes.WorkerGroup` (a process group of its own,
stopped with SIGTERM to the group and SIGKILL after a grace period). A run is
timed only once every worker process is consuming, which
:func:`wait_until_consuming` tells from the broker's heartbeats in Redis
(dramatiq's Redis broker records one per worker process when it first fetches),
so process start-up and imports are never part of a figure.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import redis

from loyalcast.processes import WorkerGroup

from .environment import REPO_ROOT

__all__ = ["running_workers", "wait_until_consuming"]


def wait_until_consuming(
    redis_url: str, namespace: str, processes: int, group: WorkerGroup, timeout: float = 120.0
) -> None:
    """Wait until ``processes`` workers have sent a heartbeat under ``namespace``.

    Raises:
        RuntimeError: the group died, or did not get ready within ``timeout``.
    """
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if int(client.zcard(f"{namespace}:__heartbeats__")) >= processes:
                return
            if not group.alive():
                raise RuntimeError(f"the workers exited early; see {group.log_file}")
            time.sleep(0.1)
    finally:
        client.close()
    raise RuntimeError(
        f"the workers were not consuming after {timeout:.0f} s; see {group.log_file}"
    )


@contextlib.contextmanager
def running_workers(
    env: Mapping[str, str],
    *,
    module: str,
    queues: Sequence[str],
    processes: int,
    threads: int,
    log_file: Path,
    redis_url: str,
    namespace: str,
) -> Iterator[WorkerGroup]:
    """``dramatiq <module>`` with ``processes`` x ``threads``, consuming; stopped on exit."""
    group = WorkerGroup(env, processes=processes, threads=threads, queues=queues, log_file=log_file)
    group.argv = [
        sys.executable,
        "-m",
        "dramatiq",
        module,
        "--path",
        str(REPO_ROOT),
        "--processes",
        str(processes),
        "--threads",
        str(threads),
        "--queues",
        *queues,
        "--worker-shutdown-timeout",
        "30000",
    ]
    group.start()
    try:
        wait_until_consuming(redis_url, namespace, processes, group)
        yield group
    finally:
        group.stop()
