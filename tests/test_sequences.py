"""Welcome sequences end to end: enrollment, steps falling due, conditions, exits, restarts."""

from __future__ import annotations

import dataclasses
import textwrap
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from scheduler import claim_due_runs
from store import Delivery, Enrollment, Member, set_clock
from workers.catalog import campaign_status, create_campaign
from workers.delivery import deliver_batch
from workers.planning import plan_run
from workers.retry import retry_failed
from workers.sequences import (
    CampaignNotEnrollable,
    UnknownCampaign,
    UnknownMembers,
    enroll,
)
from workers.sweeping import sweep

from .support import (
    OPEN_PROGRAM,
    add_member,
    create,
    run_in_threads,
    runtime_for,
    scripted_channels,
    sessions_for,
    write_campaign,
)

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

SEQUENCE = """\
name: {name}
kind: welcome_sequence
category: marketing
steps:
  - {{after: 0m, channels: [email], template: step}}
  - {{after: 2d, channels: [sms, email], template: step{step2}}}
  - {{after: 7d, channels: [email], template: step{step3}}}
"""

TEMPLATES = {
    "sms.text.j2": "Step {{ step }} of {{ steps }} for {{ member.first_name or 'you' }}",
    "email.subject.j2": "Step {{ step }} of {{ steps }}",
    "email.html.j2": "<p>Step {{ step }} of {{ steps }}</p>",
    "email.text.j2": "Step {{ step }} of {{ steps }}",
    "push.title.j2": "Step {{ step }}",
    "push.body.j2": "Step {{ step }} of {{ steps }}",
}


class Clock:
    """A clock the test moves by hand (``store.set_clock``)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Jobs:
    """Where the code under test enqueues deliver jobs; the test runs them in-process."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    def enqueue(self, message: Any, *, delay: int | None = None) -> Any:
        self.messages.append(message)
        return message

    def run(self, rt: Any) -> None:
        while self.messages:
            message = self.messages.pop(0)
            assert message.actor_name == "deliver"
            deliver_batch(rt, message.args[0])


@pytest.fixture
def clock():
    clock = Clock(T0)
    previous = set_clock(clock)
    yield clock
    set_clock(previous)


def write_sequence(
    tmp_path: Path, *, name: str = "welcome", step2: str = "", step3: str = "", extra: str = ""
) -> Path:
    """A three-step sequence (0m email, 2d sms-else-email, 7d email) and its template."""
    folder = tmp_path / "templates" / "step"
    folder.mkdir(parents=True, exist_ok=True)
    for file, source in TEMPLATES.items():
        (folder / file).write_text(source)
    path = tmp_path / f"{name}.yaml"
    text = SEQUENCE.format(name=name, step2=step2, step3=step3) + textwrap.dedent(extra)
    path.write_text(text)
    return path


class World:
    """A store with a sequence, a runtime on scripted channels, and the jobs it enqueues."""

    def __init__(self, database_url: str, tmp_path: Path, clock: Clock, **sequence: str) -> None:
        self.sessions = sessions_for(database_url)
        self.created = create(self.sessions, write_sequence(tmp_path, **sequence))
        self.jobs = Jobs()
        self.channels = scripted_channels()
        self.rt = runtime_for(database_url, tmp_path, broker=self.jobs, channels=self.channels)
        self.clock = clock

    def member(self, **fields: Any) -> int:
        fields.setdefault("consents", {"email": "opted_in", "sms": "opted_in"})
        with self.sessions.begin() as s:
            return add_member(s, **fields).id

    def enroll(self, *members: int, **options: Any) -> Any:
        options.setdefault("source", "test")
        result = enroll(self.sessions, list(members), broker=self.jobs, **options)
        self.jobs.run(self.rt)
        return result

    def at(self, **since_t0: float) -> None:
        """Move the clock to T0 + ``since_t0``, sweep, and run the deliver jobs."""
        self.clock.now = T0 + timedelta(**since_t0)
        sweep(self.rt)
        self.jobs.run(self.rt)

    def sent(self) -> list[tuple[int, str, str]]:
        """(member, channel, text) of every message sent, in order."""
        out = []
        for name, channel in self.channels.items():
            for m in channel.sent:
                text = m.parts.get("text") or m.parts.get("body") or ""
                out.append((m.delivery_id, m.member_id, name, text))
        return [(member, name, text) for _, member, name, text in sorted(out)]

    def rows(self, member_id: int) -> list[Delivery]:
        with self.sessions() as s:
            return list(
                s.scalars(
                    select(Delivery).where(Delivery.member_id == member_id).order_by(Delivery.id)
                )
            )

    def enrollments(self, member_id: int) -> list[Enrollment]:
        with self.sessions() as s:
            return list(
                s.scalars(
                    select(Enrollment)
                    .where(Enrollment.member_id == member_id)
                    .order_by(Enrollment.cycle)
                )
            )

    def set_member(self, member_id: int, **values: Any) -> None:
        with self.sessions.begin() as s:
            s.execute(update(Member).where(Member.id == member_id).values(**values))


@pytest.fixture
def world(database_url, tmp_path, clock):
    w = World(database_url, tmp_path, clock)
    yield w
    w.rt.close()


def statuses(rows: list[Delivery]) -> list[tuple[str, str | None]]:
    return [(r.status, r.reason) for r in rows]


def test_each_step_goes_out_at_enrolled_at_plus_after_then_the_sequence_finishes(world):
    """Step 1 at once, step 2 two days later, step 3 a week later; then it is finished."""
    # Given a member enrolled at T0
    member = world.member()
    result = world.enroll(member)
    [enrolled] = result.enrolled
    # Then one enrollment and one row per step exist, keyed (enrollment, step)
    [enrollment] = world.enrollments(member)
    assert (enrollment.status, enrollment.cycle, enrollment.source) == ("active", 1, "test")
    rows = world.rows(member)
    assert [r.dedupe_key for r in rows] == [
        f"sequence:{enrolled.enrollment_id}:{i}" for i in range(3)
    ]
    assert [r.payload for r in rows] == [{"step": 0}, {"step": 1}, {"step": 2}]
    assert [r.not_before for r in rows] == [T0, T0 + timedelta(days=2), T0 + timedelta(days=7)]
    assert [r.channels for r in rows] == ["email", "sms,email", "email"]
    assert statuses(rows)[1:] == [("deferred", "scheduled")] * 2
    assert rows[1].detail == "step 2 of 3, 2d after enrollment"
    # And step 1 went out at once, on email
    assert world.sent() == [(member, "email", "Step 1 of 3")]
    # When a day passes, nothing more is sent
    world.at(days=1)
    assert len(world.sent()) == 1
    # When two days have passed, step 2 goes out on SMS (its first channel)
    world.at(days=2)
    assert world.sent()[1:] == [(member, "sms", "Step 2 of 3 for Member")]
    world.at(days=6, hours=23)
    assert len(world.sent()) == 2
    # When a week has passed, step 3 goes out, and the next sweep finishes the sequence
    world.at(days=7)
    assert [(m, c) for m, c, _ in world.sent()] == [
        (member, "email"),
        (member, "sms"),
        (member, "email"),
    ]
    assert world.sent()[2][2] == "Step 3 of 3"
    world.at(days=7, minutes=1)
    [enrollment] = world.enrollments(member)
    assert (enrollment.status, enrollment.ended_at) == (
        "finished",
        T0 + timedelta(days=7, minutes=1),
    )


def test_a_step_whose_condition_fails_is_skipped_with_its_reason_and_the_sequence_goes_on(
    database_url, tmp_path, clock
):
    """`unless` holding or `only_if` failing suppresses that step (step_condition) only."""
    # Given step 2 `unless` the member bought something, step 3 `only_if` they are gold
    world = World(
        database_url,
        tmp_path,
        clock,
        step2=', unless: {field: purchases_count, op: ">", value: 0}',
        step3=", only_if: {field: tier, op: '=', value: gold}",
    )
    buyer = world.member(tier="silver")
    gold = world.member(tier="gold")
    world.enroll(buyer, gold)
    # When the buyer buys after step 1, and the whole sequence comes due
    world.set_member(buyer, purchases_count=1)
    world.at(days=2)
    world.at(days=7)
    # Then the buyer got step 1 only, each skipped step with its reason
    assert statuses(world.rows(buyer)) == [
        ("sent", None),
        ("suppressed", "step_condition"),
        ("suppressed", "step_condition"),
    ]
    assert [r.detail for r in world.rows(buyer)][1:] == [
        "step 2 skipped: its unless rule held",
        "step 3 skipped: its only_if rule did not hold",
    ]
    # And the gold member who bought nothing got all three
    assert statuses(world.rows(gold)) == [("sent", None)] * 3
    # And both sequences finished (skipped steps end a sequence as well as sent ones)
    world.at(days=8)
    assert [e.status for e in world.enrollments(buyer) + world.enrollments(gold)] == [
        "finished",
        "finished",
    ]
    world.rt.close()


def test_matching_exit_when_ends_the_sequence_and_suppresses_every_remaining_step(
    database_url, tmp_path, clock
):
    """A member who matches exit_when leaves: exited (exit_when), later steps suppressed."""
    world = World(
        database_url,
        tmp_path,
        clock,
        extra='exit_when: {field: purchases_count, op: ">=", value: 1}\n',
    )
    buyer, other = world.member(), world.member()
    world.enroll(buyer, other)
    world.set_member(buyer, purchases_count=2)
    # When step 2 comes due
    world.at(days=2)
    # Then the buyer left the sequence: step 2 and the not-yet-due step 3 are suppressed
    [enrollment] = world.enrollments(buyer)
    assert (enrollment.status, enrollment.exit_reason) == ("exited", "exit_when")
    assert enrollment.ended_at == T0 + timedelta(days=2)
    assert statuses(world.rows(buyer)) == [("sent", None)] + [("suppressed", "sequence_exit")] * 2
    assert world.rows(buyer)[2].detail == "left the sequence: matched its exit_when rule"
    # And nothing more reaches the buyer; the other member goes on
    world.at(days=7)
    assert [m for m, _, _ in world.sent()] == [buyer, other, other, other]
    world.rt.close()


def test_opting_out_of_every_channel_or_being_deleted_ends_the_sequence(world):
    """Opted out of all of the sequence's channels (email, sms), or deleted: exited."""
    quitter = world.member()
    email_only = world.member()
    deleted = world.member()
    world.enroll(quitter, email_only, deleted)
    with world.sessions.begin() as s:
        from workers.feedback import set_consent

        set_consent(s, quitter, "email", "opted_out", source="unsubscribe-link")
        set_consent(s, quitter, "sms", "opted_out", source="sms-keyword")
        set_consent(s, email_only, "sms", "opted_out", source="sms-keyword")
    world.set_member(deleted, deleted_at=T0 + timedelta(days=1))
    world.at(days=2)
    # Then the quitter and the deleted member left with their reasons
    reasons = {m: world.enrollments(m)[0].exit_reason for m in (quitter, email_only, deleted)}
    assert reasons == {quitter: "opted_out", email_only: None, deleted: "member_deleted"}
    for member in (quitter, deleted):
        assert statuses(world.rows(member))[1:] == [("suppressed", "sequence_exit")] * 2
    # And a member who opted out of SMS only still gets step 2, by email
    assert statuses(world.rows(email_only))[1] == ("sent", None)
    assert world.rows(email_only)[1].channel == "email"


def test_re_enrolling_an_active_or_finished_member_does_nothing(world):
    """Enrolled again while active, or after the end without `restart`: nothing new."""
    member = world.member()
    world.enroll(member)
    again = world.enroll(member)
    assert (again.enrolled, [s.reason for s in again.skipped]) == ([], ["active"])
    world.at(days=8)
    after = world.enroll(member)
    assert (after.enrolled, [s.reason for s in after.skipped]) == ([], ["finished"])
    assert len(world.rows(member)) == 3
    assert len(world.sent()) == 3


def test_with_restart_a_finished_sequence_starts_again_as_a_new_cycle_with_new_keys(
    database_url, tmp_path, clock
):
    """`restart: true`: a member enrolled after the end gets cycle 2, keyed anew, sent again."""
    world = World(database_url, tmp_path, clock, extra="restart: true\n")
    member = world.member()
    first = world.enroll(member).enrolled[0]
    assert world.enroll(member).skipped[0].reason == "active"  # not while it runs
    world.clock.now = T0 + timedelta(days=7)
    sweep(world.rt)
    world.jobs.run(world.rt)
    # When the member enrolls again after the last step (before any sweep marked it finished)
    second = world.enroll(member).enrolled[0]
    # Then cycle 2 starts with keys of its own, and its step 1 goes out
    assert [(e.cycle, e.status) for e in world.enrollments(member)] == [
        (1, "finished"),
        (2, "active"),
    ]
    assert second.enrollment_id != first.enrollment_id
    keys = [r.dedupe_key for r in world.rows(member)]
    assert keys[3:] == [f"sequence:{second.enrollment_id}:{i}" for i in range(3)]
    assert len(world.sent()) == 4
    world.rt.close()


def test_concurrent_enrollments_of_the_same_members_enroll_each_once(world):
    """Two threads enrolling the same 40 members at once: 40 enrollments, 120 rows."""
    members = [world.member() for _ in range(40)]
    barrier = threading.Barrier(2)
    results: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            results.append(enroll(world.sessions, members, source="test"))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    run_in_threads(run, 2)
    assert errors == []
    assert sum(len(r.enrolled) for r in results) == 40
    assert sorted(e.member_id for r in results for e in r.enrolled) == sorted(members)
    with world.sessions() as s:
        assert len(list(s.scalars(select(Enrollment.id)))) == 40
        assert len(list(s.scalars(select(Delivery.id)))) == 120


def test_enroll_refuses_unknown_members_and_campaigns_writing_nothing(world, tmp_path):
    """An unknown member, campaign, or a campaign that is not a sequence: an error, no rows."""
    member = world.member()
    with world.sessions.begin() as s:
        external = s.get(Member, member).external_id
    with pytest.raises(UnknownMembers) as info:
        enroll(world.sessions, [external, "nobody"], source="test")
    assert str(info.value) == "no member with external id 'nobody'"
    with pytest.raises(UnknownCampaign):
        enroll(world.sessions, [member], source="test", campaign="nope")
    from .support import write_campaign

    create(world.sessions, write_campaign(tmp_path, name="news"))
    with pytest.raises(CampaignNotEnrollable) as refused:
        enroll(world.sessions, [member], source="test", campaign="news")
    assert str(refused.value) == "campaign 'news' is a broadcast campaign, not a welcome sequence"
    assert world.enrollments(member) == []


def test_members_outside_the_segment_or_deleted_are_not_enrolled(database_url, tmp_path, clock):
    """The campaign's segment decides who is enrolled; a deleted member never is."""
    world = World(
        database_url, tmp_path, clock, extra="segment: {field: tier, op: '=', value: gold}\n"
    )
    gold, silver = world.member(tier="gold"), world.member(tier="silver")
    gone = world.member(tier="gold", deleted_at=T0)
    result = world.enroll(gold, silver, gone)
    assert [e.member_id for e in result.enrolled] == [gold]
    assert {(s.member_id, s.reason) for s in result.skipped} == {
        (silver, "not_in_segment"),
        (gone, "deleted"),
    }
    world.rt.close()


def test_the_built_in_welcome_template_is_accepted_for_a_sequence(database_url, tmp_path):
    """`welcome-1` renders for members without an enrollment date: a sequence may use it."""
    path = tmp_path / "builtin.yaml"
    path.write_text(
        "name: builtin\nkind: welcome_sequence\ncategory: marketing\n"
        "steps:\n  - {after: 0m, channels: [email, sms, push], template: welcome-1}\n"
    )
    created = create(sessions_for(database_url), path)
    assert (created.name, created.run_id) == ("builtin", None)


def test_a_step_rule_the_program_no_longer_allows_fails_its_rows_with_the_reason(
    database_url, tmp_path, clock
):
    """A rule naming an attribute the policy file dropped fails those rows, not the batch.

    Before, the deliver job raised on every attempt and the rows stayed open
    with no reason. Now each row of that campaign fails with ``rule_error`` and
    a detail naming the rule, the rest of the batch goes on, and once the
    attribute is declared again ``retry`` sends them.
    """
    # Given a sequence whose step 2 is only for members with attributes.vip, created
    # while the program declared it, and a second sequence without conditions
    vip = dataclasses.replace(OPEN_PROGRAM, attributes={"vip": "boolean"})
    sessions = sessions_for(database_url)
    path = write_sequence(
        tmp_path, step2=", only_if: {field: attributes.vip, op: '=', value: true}"
    )
    created = create_campaign(sessions, path, program=vip)
    plain = create_campaign(sessions, write_sequence(tmp_path, name="plain"), program=vip)
    jobs = Jobs()
    channels = scripted_channels()
    with sessions.begin() as s:
        member = add_member(s, attributes={"vip": True}, consents={"email": "opted_in"}).id
    rt = runtime_for(database_url, tmp_path, broker=jobs, channels=channels, program=vip)
    enroll(sessions, [member], campaign=created.name, source="test", broker=jobs)
    enroll(sessions, [member], campaign=plain.name, source="test", broker=jobs)
    jobs.run(rt)
    rt.close()
    # When the workers restart on a policy file without that attribute, and step 2 falls due
    stale = runtime_for(database_url, tmp_path, broker=jobs, channels=channels)
    clock.now = T0 + timedelta(days=2)
    sweep(stale)
    [job] = jobs.messages  # one deliver job names both sequences' step 2
    jobs.run(stale)
    # Then that sequence's step 2 failed with the reason, naming the rule and the way back
    with sessions() as s:
        rows = {
            (r.campaign_id, (r.payload or {}).get("step")): r
            for r in s.scalars(select(Delivery).where(Delivery.member_id == member))
        }
    failed = rows[(created.campaign_id, 1)]
    assert (failed.status, failed.reason) == ("failed", "rule_error")
    assert failed.detail.startswith(f"campaign {created.name} v1: steps[1].only_if")
    assert "vip" in failed.detail
    assert f"loyalcast deliveries retry --campaign {created.name}" in failed.detail
    # And the other sequence's step 2, in the same deliver job, went out
    assert sorted(job.args[0]) == sorted([failed.id, rows[(plain.campaign_id, 1)].id])
    assert rows[(plain.campaign_id, 1)].status == "sent"
    # When the attribute is declared again and the failed rows are retried
    fixed = runtime_for(database_url, tmp_path, broker=jobs, channels=channels, program=vip)
    assert retry_failed(sessions, created.name, reason="rule_error", broker=jobs).reopened == 1
    jobs.run(fixed)
    # Then step 2 is sent to the VIP member
    with sessions() as s:
        assert s.get(Delivery, failed.id).status == "sent"
    stale.close()
    fixed.close()


def test_campaign_status_counts_the_sequences_rows_and_no_other_campaigns(world, tmp_path):
    """`campaigns status` counts a sequence's rows by enrollment, a broadcast's by run."""
    # Given two members enrolled (the second without email consent), the first
    # step due, and a broadcast planned to the same members
    first = world.member()
    second = world.member(consents={"sms": "opted_in"})
    world.enroll(first, second)
    broadcast = create(world.sessions, write_campaign(tmp_path))
    assert claim_due_runs(world.sessions) == [broadcast.run_id]
    plan_run(world.rt, broadcast.run_id)
    # When each campaign's status is read
    reports = {
        name: campaign_status(world.sessions, name, rates={})
        for name in ("welcome", "test-broadcast")
    }
    # Then each counts its own rows, per status and reason
    for name, created in (("welcome", world.created), ("test-broadcast", broadcast)):
        with world.sessions() as s:
            own = s.execute(
                select(Delivery.status, Delivery.reason, func.count())
                .where(Delivery.campaign_id == created.campaign_id)
                .group_by(Delivery.status, Delivery.reason)
            ).all()
        expected = sorted(((st, r, n) for st, r, n in own), key=lambda c: (c[0], c[1] or ""))
        assert reports[name].counts == expected
    assert ("sent", None, 1) in reports["welcome"].counts
    assert reports["test-broadcast"].counts == [("pending", None, 2)]
