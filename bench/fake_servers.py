"""The provider fakes in a process of their own, for scenarios that time one process.

``python -m bench.fake_servers VALIDATE_EVERY`` starts the SendGrid and
Twilio fakes on 127.0.0.1, prints their URLs as one JSON line
(``{"sendgrid": ..., "twilio": ...}``), then answers commands read from
stdin, one a line, with one JSON line each:

- ``reset``: forget what was counted (``{}``);
- ``snapshot``: what the fakes accepted since (messages, requests, the
  requests that failed their spec and why, and each recipient's count).

It stops when stdin closes. :class:`FakeServers` is the other end. Where
the fakes run in the measured process (scenario c), their CPU is the
workers' competition, not the worker's own cost; here it is neither.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from typing import IO, Any

from channels.fakes.sendgrid import FakeSendGrid
from channels.fakes.twilio import FakeTwilio

from .environment import REPO_ROOT
from .meters import FakeMeter, Intake

__all__ = ["FakeServers", "main"]


class FakeServers:
    """The fakes' process, started on enter and stopped on exit."""

    def __init__(self, validate_every: int) -> None:
        self.validate_every = validate_every
        self.sendgrid_url = ""
        self.twilio_url = ""
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> FakeServers:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.fake_servers", str(self.validate_every)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
            env=env,
        )
        try:
            urls = self._read()
        except Exception:
            self.__exit__()
            raise
        self.sendgrid_url, self.twilio_url = urls["sendgrid"], urls["twilio"]
        return self

    def __exit__(self, *exc: object) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def reset(self) -> None:
        """Forget what the fakes accepted so far."""
        self._command("reset")

    def snapshot(self) -> Intake:
        """What the fakes accepted since the last reset."""
        data = self._command("snapshot")
        return Intake(
            requests=data["requests"],
            invalid=data["invalid"],
            messages=data["messages"],
            errors=data["errors"],
            recipients=Counter(data["recipients"]),
        )

    def _command(self, name: str) -> dict[str, Any]:
        if self._process is None or self._process.stdin is None:
            raise RuntimeError("the fakes' process is not running")
        self._process.stdin.write(name + "\n")
        self._process.stdin.flush()
        return self._read()

    def _read(self) -> dict[str, Any]:
        assert self._process is not None
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            code = self._process.poll()
            raise RuntimeError(f"the fakes' process ended (exit code {code}) without answering")
        answer: dict[str, Any] = json.loads(line)
        return answer


def main(argv: list[str] | None = None, stdin: IO[str] = sys.stdin) -> int:
    args = sys.argv[1:] if argv is None else argv
    validate_every = int(args[0]) if args else 100
    sendgrid = FakeSendGrid(validate_every=validate_every).start()
    twilio = FakeTwilio(validate_every=validate_every).start()
    try:
        with FakeMeter([sendgrid, twilio]) as meter:
            _answer({"sendgrid": sendgrid.url, "twilio": twilio.url})
            for line in stdin:
                command = line.strip()
                if command == "reset":
                    meter.reset()
                    _answer({})
                elif command == "snapshot":
                    intake = meter.snapshot()
                    _answer(
                        {
                            "requests": intake.requests,
                            "invalid": intake.invalid,
                            "messages": intake.messages,
                            "errors": intake.errors,
                            "recipients": dict(intake.recipients),
                        }
                    )
                else:
                    _answer({"error": f"unknown command {command!r}"})
    finally:
        sendgrid.stop()
        twilio.stop()
    return 0


def _answer(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
