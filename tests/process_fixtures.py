"""Fixtures for tests that run real loyalcast processes: worker groups and schedulers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loyalcast.processes import WorkerGroup

from .support import OPEN_POLICY_YAML

LOYALCAST = str(Path(sys.executable).parent / "loyalcast")


@pytest.fixture
def env(database_url: str, redis_url: str, redis_namespace: str, tmp_path: Path) -> dict[str, str]:
    """The environment of every process in a test: one store, one Redis namespace, fast timers."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(OPEN_POLICY_YAML)  # no quiet hours: these tests must not depend on the clock
    values = dict(os.environ)
    values.update(
        {
            "LOYALCAST_DATABASE_URL": database_url,
            "LOYALCAST_REDIS_URL": redis_url,
            "LOYALCAST_QUEUE_NAMESPACE": redis_namespace,
            "LOYALCAST_DATA_DIR": str(tmp_path / "data"),
            "LOYALCAST_OUTBOX_DIR": str(tmp_path / "outbox"),
            "LOYALCAST_BATCH_SIZE": "500",
            "LOYALCAST_LEASE_SECONDS": "4",
            "LOYALCAST_TICK_SECONDS": "0.5",
            "LOYALCAST_SWEEP_SECONDS": "1",
            "LOYALCAST_LEADER_TTL_SECONDS": "3",
            "LOYALCAST_HEARTBEAT_TIMEOUT_MS": "5000",
            "LOYALCAST_MAINTENANCE_CHANCE": "1000000",
            "LOYALCAST_LOG_LEVEL": "WARNING",
            "LOYALCAST_POLICY_FILE": str(policy),
        }
    )
    return values


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Callable[..., object]]:
    """Start worker groups and schedulers; every one is killed when the test ends."""
    started: list[WorkerGroup | subprocess.Popen[bytes]] = []

    def start(kind: str, env: dict[str, str], *, processes: int = 2, threads: int = 2) -> object:
        log = (tmp_path / f"{kind}-{len(started)}.log").open("ab")
        if kind == "workers":
            group = WorkerGroup(
                env,
                processes=processes,
                threads=threads,
                log_file=tmp_path / f"workers-{len(started)}.log",
            )
            group.start()
            started.append(group)
            return group
        proc = subprocess.Popen(
            [LOYALCAST, "scheduler"], env=env, stdout=log, stderr=log, start_new_session=True
        )
        started.append(proc)
        return proc

    yield start
    for item in started:
        if isinstance(item, WorkerGroup):
            item.signal(signal.SIGKILL)
            if item.process is not None:
                item.process.wait()
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(item.pid, signal.SIGKILL)
            item.wait()
