"""What the benchmarks watch while a run goes: the fakes' intake and the workers' memory.

:class:`FakeMeter` drains the provider fakes' request and message lists in a
thread, several times a second. It counts what they accepted, checks that no
recipient got two messages and that every sampled request passed its spec,
and keeps a cumulative count over time for the throughput plot. Draining also
keeps the bench process lean: a fake keeps every request body it receives,
which at a million emails would be gigabytes.

:class:`RssSampler` samples the resident memory of a process tree (the
dramatiq parent and its forked workers) with psutil and keeps the peaks.
:class:`DatabaseCpu` reads the CPU time of the PostgreSQL server, when it runs
on this machine: the workers, the database and the fakes share its cores, so
where the time goes says what a faster worker could gain.

Recipients are compared as a multiset (``Counter`` of ``fake:to``) against
what the store says was sent, not checked for uniqueness: the generated
members may share a phone number (random last digits), and each of them is
owed their own message.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil
from sqlalchemy import Engine

from channels.fakes.sendgrid import FakeSendGrid
from channels.fakes.server import FakeProvider
from channels.fakes.twilio import FakeTwilio

__all__ = [
    "FAKE_OF",
    "DatabaseCpu",
    "FakeMeter",
    "Intake",
    "RssSampler",
    "check_intake",
    "recipient_key",
]

MIB = 2**20
#: channel -> the fake that serves it.
FAKE_OF = {"email": "sendgrid", "sms": "twilio"}


def recipient_key(channel: str, to: str) -> str:
    """How a recipient is counted: ``fake:to``."""
    return f"{FAKE_OF[channel]}:{to}"


def _take(items: list[Any]) -> list[Any]:
    """Remove and return what ``items`` holds now; appends made meanwhile stay (GIL-atomic)."""
    n = len(items)
    taken = items[:n]
    del items[:n]
    return taken


@dataclass
class Intake:
    """What the fakes accepted since the meter was last reset."""

    requests: int = 0
    invalid: int = 0
    messages: int = 0
    first_request_at: float | None = None
    last_request_at: float | None = None
    errors: list[str] = field(default_factory=list)
    timeline: list[tuple[float, int]] = field(default_factory=list)
    """(epoch seconds, messages accepted so far), one point per drain."""
    recipients: Counter[str] = field(default_factory=Counter)
    """``fake:to`` -> messages accepted for that recipient."""


def check_intake(label: str, intake: Intake, expected: Counter[str]) -> None:
    """Raise unless the fakes accepted exactly ``expected`` (a multiset of recipient keys).

    Raises:
        AssertionError: a message missing or extra (sent twice), or a request that
            failed its spec; the message says which.
    """
    problems = []
    total = sum(expected.values())
    if intake.messages != total:
        problems.append(f"the fakes accepted {intake.messages} messages, the record says {total}")
    extra = intake.recipients - expected
    missing = expected - intake.recipients
    if extra:
        problems.append(f"{sum(extra.values())} unexpected (or repeated): {list(extra)[:3]}")
    if missing:
        problems.append(f"{sum(missing.values())} never accepted: {list(missing)[:3]}")
    if intake.invalid:
        problems.append(f"{intake.invalid} requests failed the spec: {intake.errors}")
    if problems:
        raise AssertionError(f"{label}: " + "; ".join(problems))


class FakeMeter:
    """Drains ``fakes`` every ``interval`` seconds in a thread (a context manager)."""

    def __init__(self, fakes: Sequence[FakeProvider], interval: float = 0.25) -> None:
        self.fakes = list(fakes)
        self.interval = interval
        self._lock = threading.Lock()
        self._intake = Intake()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fake-meter", daemon=True)

    def __enter__(self) -> FakeMeter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def reset(self) -> None:
        """Drain, then forget everything counted: the next phase starts from zero."""
        self.drain()
        with self._lock:
            self._intake = Intake()

    def snapshot(self) -> Intake:
        """Drain now and return a copy of the counts so far."""
        self.drain()
        with self._lock:
            intake = self._intake
            return Intake(
                requests=intake.requests,
                invalid=intake.invalid,
                messages=intake.messages,
                first_request_at=intake.first_request_at,
                last_request_at=intake.last_request_at,
                errors=list(intake.errors),
                timeline=list(intake.timeline),
                recipients=Counter(intake.recipients),
            )

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.drain()

    def drain(self) -> None:
        """Count and discard what the fakes recorded since the last drain."""
        with self._lock:
            intake = self._intake
            new = 0
            for fake in self.fakes:
                for request in _take(fake.requests):
                    intake.requests += 1
                    if intake.first_request_at is None or request.at < intake.first_request_at:
                        intake.first_request_at = request.at
                    if intake.last_request_at is None or request.at > intake.last_request_at:
                        intake.last_request_at = request.at
                    if not request.valid:
                        intake.invalid += 1
                        if len(intake.errors) < 5:
                            intake.errors.append(f"{fake.name} {request.path}: {request.error}")
                recipients = self._recipients(fake)
                intake.recipients.update(f"{fake.name}:{to}" for to in recipients)
                new += len(recipients)
            intake.messages += new
            if new or not intake.timeline:
                intake.timeline.append((time.time(), intake.messages))

    @staticmethod
    def _recipients(fake: FakeProvider) -> list[str]:
        if isinstance(fake, FakeSendGrid):
            return [mail.to for mail in _take(fake.mails)]
        if isinstance(fake, FakeTwilio):
            return [str(message["to"]) for message in _take(fake.messages)]
        return []


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` and its descendants."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for process in tree:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


class RssSampler:
    """Peak resident memory of process ``pid`` and its descendants (a context manager).

    Also the CPU seconds the tree used between enter and exit (:attr:`cpu_seconds`):
    unlike throughput, CPU per message hardly moves with what else the machine runs.
    """

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_process_bytes = 0
        """The largest RSS any one process of the tree reached."""
        self.peak_total_bytes = 0
        """The largest sum of the tree's RSS at one sample."""
        self.processes_seen = 0
        self.cpu_seconds = 0.0
        """CPU seconds the tree used inside the ``with`` block."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self.cpu_seconds = -tree_cpu_seconds(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu_seconds += tree_cpu_seconds(self.pid)

    def _loop(self) -> None:
        seen: set[int] = set()
        while True:
            try:
                root = psutil.Process(self.pid)
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                tree = []
            total = 0
            for process in tree:
                try:
                    rss = int(process.memory_info().rss)
                except psutil.Error:
                    continue
                seen.add(process.pid)
                total += rss
                self.peak_process_bytes = max(self.peak_process_bytes, rss)
            self.peak_total_bytes = max(self.peak_total_bytes, total)
            self.processes_seen = len(seen)
            if self._stop.wait(self.interval):
                return

    @property
    def peak_process_mib(self) -> float:
        return self.peak_process_bytes / MIB

    @property
    def peak_total_mib(self) -> float:
        return self.peak_total_bytes / MIB


_LOOPBACK = (None, "", "localhost", "127.0.0.1", "::1")


def database_server_pid(engine: Engine) -> int | None:
    """The pid of ``engine``'s PostgreSQL server (postmaster) if it runs here, else None."""
    if engine.url.get_backend_name() != "postgresql" or engine.url.host not in _LOOPBACK:
        return None
    with engine.connect() as conn:
        backend = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    try:
        server = psutil.Process(int(backend)).parent()
        if server is None or not server.name().startswith("postgres"):
            return None
        return int(server.pid)
    except psutil.Error:  # another namespace (a container) or no access
        return None


def server_cpu_seconds(pid: int) -> float:
    """CPU seconds of the server ``pid``: its own, its live children's and its ended ones'.

    A backend that ends is reaped by the server, which then counts its time
    as ``children_user`` and ``children_system``.
    """
    times = psutil.Process(pid).cpu_times()
    return tree_cpu_seconds(pid) + float(times.children_user + times.children_system)


class DatabaseCpu:
    """CPU seconds the local PostgreSQL server used inside the ``with`` block.

    :attr:`seconds` stays None when the server is not on this machine (or its
    processes cannot be read). It is the whole server: the backends serving
    the workers, and the bench's own polling (one short query per half second).
    """

    def __init__(self, engine: Engine) -> None:
        self.pid = database_server_pid(engine)
        self.seconds: float | None = None
        self._start = 0.0

    def __enter__(self) -> DatabaseCpu:
        if self.pid is not None:
            self._start = server_cpu_seconds(self.pid)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pid is not None:
            try:
                self.seconds = server_cpu_seconds(self.pid) - self._start
            except psutil.Error:
                self.seconds = None
