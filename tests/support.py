"""Helpers for tests: members, campaign files, runtimes, and a channel that fails on cue."""

from __future__ import annotations

import itertools
import textwrap
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from channels import BatchChannel, DeliveryError, Message, Receipt
from loyalcast.settings import Settings
from store import Consent, Member, PushToken, make_engine, make_sessionmaker
from workers import Runtime
from workers.catalog import CreatedCampaign, create_campaign
from workers.program import Program

_ids = itertools.count(1)

BROADCAST = """\
name: {name}
kind: broadcast
category: {category}
segment: {segment}
channels: {channels}
template: winter-double-points
on_ambiguous: {on_ambiguous}
max_attempts: {max_attempts}
"""


def add_member(
    session: Session,
    *,
    consents: dict[str, str] | None = None,
    push_token: str | None = None,
    **fields: Any,
) -> Member:
    """A member with sensible defaults; ``consents`` maps channel -> opted_in/opted_out."""
    n = next(_ids)
    values: dict[str, Any] = {
        "external_id": f"T{n:06d}",
        "name": f"Member {n}",
        "email": f"m{n}@example.com",
        "phone": f"+1415555{n:04d}",
        "locale": "en_US",
        "time_zone": "America/New_York",
        "tier": "gold",
        "points_balance": 1000,
        "attributes": {},
    }
    values.update(fields)
    member = Member(**values)
    session.add(member)
    session.flush()
    for channel, status in (consents if consents is not None else {"email": "opted_in"}).items():
        session.add(
            Consent(
                member_id=member.id,
                channel=channel,
                status=status,
                source="test",
                updated_at=datetime(2026, 11, 2, tzinfo=UTC),
            )
        )
    if push_token:
        session.add(PushToken(member_id=member.id, kind="fcm", token=push_token))
    return member


def write_campaign(
    tmp_path: Path,
    *,
    name: str = "test-broadcast",
    category: str = "marketing",
    segment: str = "{all: [{field: tier, op: in, value: [gold]}]}",
    channels: str = "[push, email, sms]",
    on_ambiguous: str = "skip",
    max_attempts: int = 3,
    extra: str = "",
) -> Path:
    """A broadcast campaign file in ``tmp_path``."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        BROADCAST.format(
            name=name,
            category=category,
            segment=segment,
            channels=channels,
            on_ambiguous=on_ambiguous,
            max_attempts=max_attempts,
        )
        + textwrap.dedent(extra)
    )
    return path


def settings_for(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        outbox_dir=tmp_path / "outbox",
        **overrides,
    )


#: A program policy with no quiet hours and no caps, so that tests do not depend on
#: the wall clock; tests about quiet hours or caps pass their own.
OPEN_PROGRAM = Program(quiet_hours={})

#: The same as a policy file, for tests that run worker processes.
OPEN_POLICY_YAML = "quiet_hours: {sms: null}\n"


def runtime_for(
    database_url: str,
    tmp_path: Path,
    *,
    broker: Any = None,
    channels: dict[str, Any] | None = None,
    program: Program | None = None,
    **overrides: Any,
) -> Runtime:
    """A worker runtime on ``database_url`` (no quiet hours, no caps unless ``program`` says)."""
    return Runtime(
        settings_for(database_url, tmp_path, **overrides),
        broker,
        channels,
        program=program or OPEN_PROGRAM,
    )


def sessions_for(database_url: str) -> sessionmaker[Session]:
    return make_sessionmaker(make_engine(database_url))


def create(sessions: sessionmaker[Session], path: Path) -> CreatedCampaign:
    return create_campaign(sessions, path)


class RecordingLimiter:
    """A rate limiter that never waits and remembers what it was told."""

    def __init__(self) -> None:
        self.waits = 0
        self.acquired: list[int] = []
        self.blocks: list[float] = []

    def wait(self) -> None:
        self.waits += 1

    def acquire(self, count: int) -> int:
        self.acquired.append(count)
        return count

    @property
    def tokens(self) -> int:
        """Tokens taken, one per wait() and ``count`` per acquire()."""
        return self.waits + sum(self.acquired)

    def block(self, seconds: float) -> None:
        self.blocks.append(seconds)


class ScriptedChannel(BatchChannel):
    """A channel whose outcome per message is decided by ``script(message)``.

    ``script`` returns None to accept, or a DeliveryError to fail. Every
    accepted message is kept in ``sent``.
    """

    live = False
    max_batch = 10

    def __init__(
        self, name: str, script: Callable[[Message], DeliveryError | None] | None = None
    ) -> None:
        self.name = name
        self.script = script or (lambda _m: None)
        self.sent: list[Message] = []
        self.calls = 0

    def send(self, message: Message) -> Receipt:
        self.calls += 1
        error = self.script(message)
        if error is not None:
            raise error
        self.sent.append(message)
        return Receipt(
            provider_message_id=f"scripted-{message.delivery_id}", accepted_at=datetime.now(UTC)
        )


def scripted_channels(
    script: Callable[[Message], DeliveryError | None] | None = None,
    names: Sequence[str] = ("sms", "email", "push"),
) -> dict[str, Any]:
    return {name: ScriptedChannel(name, script) for name in names}


def run_in_threads(target: Callable[[], None], count: int) -> None:
    """Run ``target`` in ``count`` threads at once, wait for all, re-raise the first error."""
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            target()
        except BaseException as exc:  # a worker thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=guarded) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
