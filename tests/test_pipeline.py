"""plan, deliver and sweep in-process, on SQLite and PostgreSQL.

The broker is dramatiq's StubBroker here (these tests are about the store's
semantics); the real Redis path runs in test_broker_processes.py.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import func, select, update

from channels import InvalidRecipient, PermanentDeliveryError, TransientDeliveryError, read_outbox
from scheduler import claim_due_runs
from store import (
    Campaign,
    CampaignRun,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
    RunStatus,
    utcnow,
)
from workers.delivery import deliver_batch
from workers.feedback import apply_provider_status
from workers.planning import plan_run
from workers.sweeping import sweep

from .support import (
    add_member,
    create,
    runtime_for,
    scripted_channels,
    sessions_for,
    write_campaign,
)


def _planned(database_url: str, tmp_path: Path, members: int = 5, **campaign: str) -> tuple:
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        ids = [add_member(s).id for _ in range(members)]
    created = create(sessions, write_campaign(tmp_path, **campaign))
    assert claim_due_runs(sessions) == [created.run_id]
    return sessions, ids, created.run_id


def _job_args(broker: StubBroker, queue: str) -> list[list[int]]:
    return [Message.decode(raw).args[0] for raw in broker.queues[queue].queue]


def _rows(sessions, run_id=None) -> list[Delivery]:
    with sessions() as s:
        stmt = select(Delivery).order_by(Delivery.id)
        if run_id is not None:
            stmt = stmt.where(Delivery.run_id == run_id)
        return list(s.scalars(stmt))


def test_plan_writes_one_pending_row_per_member_and_is_idempotent(database_url, tmp_path):
    """Planning twice (a redelivered plan job) writes each member's row once."""
    # Given five gold members and one basic member, and a broadcast to gold
    sessions, ids, run_id = _planned(database_url, tmp_path)
    with sessions.begin() as s:
        add_member(s, tier="basic")
    rt = runtime_for(database_url, tmp_path, batch_size=2)
    # When the plan runs, and runs again after being reset to planning
    first = plan_run(rt, run_id)
    with sessions.begin() as s:
        s.execute(update(CampaignRun).values(status=RunStatus.PLANNING, planned_through=0))
    second = plan_run(rt, run_id)
    # Then there is exactly one pending row per gold member, keyed by run and member
    rows = _rows(sessions)
    assert (first.written, second.written) == (5, 0)
    assert sorted(r.member_id for r in rows) == ids
    assert {r.status for r in rows} == {DeliveryStatus.PENDING}
    assert rows[0].dedupe_key == f"broadcast:{run_id}:{ids[0]}"
    with sessions() as s:
        run = s.get(CampaignRun, run_id)
        assert (run.status, run.planned_through) == (RunStatus.PLANNED, ids[-1])


def test_plan_enqueues_one_deliver_job_per_batch(database_url, tmp_path):
    """Deliver jobs carry at most batch_size delivery ids, and name every row once."""
    # Given five members and a batch size of two
    sessions, _ids, run_id = _planned(database_url, tmp_path)
    broker = StubBroker()
    broker.declare_queue("deliver")
    rt = runtime_for(database_url, tmp_path, broker=broker, batch_size=2)
    # When the run is planned
    plan_run(rt, run_id)
    # Then three jobs name the five rows
    decoded = _job_args(broker, "deliver")
    assert [len(j) for j in decoded] == [2, 2, 1]
    assert sorted(i for j in decoded for i in j) == [r.id for r in _rows(sessions)]


def test_plan_with_channels_all_keys_each_channel(database_url, tmp_path):
    """With channels: all, a member gets one row per channel, the channel in the key."""
    sessions, ids, run_id = _planned(database_url, tmp_path, members=2, channels="all")
    plan_run(runtime_for(database_url, tmp_path), run_id)
    rows = _rows(sessions)
    assert len(rows) == 8
    assert {r.dedupe_key for r in rows if r.member_id == ids[0]} == {
        f"broadcast:{run_id}:{ids[0]}:{c}" for c in ("sms", "email", "push", "direct_mail")
    }


def test_deliver_sends_on_first_consented_reachable_channel(database_url, tmp_path):
    """push > email > sms: the first channel with consent and an address carries the message."""
    # Given members reachable in different ways
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        pushable = add_member(
            s, consents={"push": "opted_in", "email": "opted_in"}, push_token="tok-1"
        ).id
        email_only = add_member(s, consents={"push": "opted_in", "email": "opted_in"}).id
        sms_only = add_member(s, consents={"email": "opted_out", "sms": "opted_in"}).id
        nobody = add_member(s, consents={"sms": "opted_out"}, email=None).id
    created = create(sessions, write_campaign(tmp_path))
    claim_due_runs(sessions)
    rt = runtime_for(database_url, tmp_path)
    plan_run(rt, created.run_id)
    # When the rows are delivered (through the file outbox)
    deliver_batch(rt, [r.id for r in _rows(sessions)])
    # Then each went out once, on the expected channel, or was suppressed with its reason
    by_member = {r.member_id: r for r in _rows(sessions)}
    assert (by_member[pushable].status, by_member[pushable].channel) == ("sent", "push")
    assert (by_member[email_only].status, by_member[email_only].channel) == ("sent", "email")
    assert (by_member[sms_only].status, by_member[sms_only].channel) == ("sent", "sms")
    assert by_member[nobody].status == "suppressed"
    assert by_member[nobody].reason == "consent"
    assert "sms: opted out 2026-11-02 via test" in by_member[nobody].detail
    outbox = tmp_path / "outbox"
    assert [line["member_id"] for line in read_outbox(outbox, "push")] == [pushable]
    assert read_outbox(outbox, "push")[0]["to"] == "tok-1"
    assert [line["member_id"] for line in read_outbox(outbox, "sms")] == [sms_only]
    with sessions() as s:
        assert s.get(CampaignRun, created.run_id).status == RunStatus.COMPLETED


def test_delivering_the_same_batch_twice_sends_once(database_url, tmp_path):
    """A deliver job that runs twice (redelivery, sweep) finds the rows final and sends nothing."""
    sessions, _ids, run_id = _planned(database_url, tmp_path)
    channels = scripted_channels()
    rt = runtime_for(database_url, tmp_path, channels=channels)
    plan_run(rt, run_id)
    ids = [r.id for r in _rows(sessions)]
    deliver_batch(rt, ids)
    deliver_batch(rt, ids)
    assert len(channels["email"].sent) == 5
    assert {r.status for r in _rows(sessions)} == {"sent"}


def test_expired_sending_lease_becomes_unknown_not_resent(database_url, tmp_path):
    """A row left 'sending' by a dead worker ends 'unknown' and is never sent again."""
    # Given a planned row claimed by a worker whose lease has expired
    sessions, _ids, run_id = _planned(database_url, tmp_path, members=2)
    channels = scripted_channels()
    rt = runtime_for(database_url, tmp_path, channels=channels)
    plan_run(rt, run_id)
    rows = _rows(sessions)
    with sessions.begin() as s:
        s.execute(
            update(Delivery)
            .where(Delivery.id == rows[0].id)
            .values(
                status=DeliveryStatus.SENDING,
                lease_until=utcnow() - timedelta(seconds=1),
                lease_owner="dead",
            )
        )
    # When a deliver job names both rows
    deliver_batch(rt, [r.id for r in rows])
    # Then the ambiguous row is unknown and only the other one was sent
    after = {r.id: r for r in _rows(sessions)}
    assert (after[rows[0].id].status, after[rows[0].id].reason) == ("unknown", "lease_expired")
    assert after[rows[1].id].status == "sent"
    assert [m.delivery_id for m in channels["email"].sent] == [rows[1].id]


def test_on_ambiguous_resend_sends_an_expired_lease_again(database_url, tmp_path):
    """With on_ambiguous: resend, an expired lease goes back to pending and is sent."""
    sessions, _ids, run_id = _planned(database_url, tmp_path, members=1, on_ambiguous="resend")
    channels = scripted_channels()
    rt = runtime_for(database_url, tmp_path, channels=channels)
    plan_run(rt, run_id)
    row = _rows(sessions)[0]
    with sessions.begin() as s:
        s.execute(
            update(Delivery).values(
                status=DeliveryStatus.SENDING,
                attempts=1,
                lease_until=utcnow() - timedelta(seconds=1),
            )
        )
    deliver_batch(rt, [row.id])
    after = _rows(sessions)[0]
    assert (after.status, after.attempts) == ("sent", 2)


def test_a_live_lease_is_left_alone(database_url, tmp_path):
    """A row another worker is sending right now is neither sent nor changed."""
    sessions, _ids, run_id = _planned(database_url, tmp_path, members=1)
    channels = scripted_channels()
    rt = runtime_for(database_url, tmp_path, channels=channels)
    plan_run(rt, run_id)
    with sessions.begin() as s:
        s.execute(
            update(Delivery).values(
                status=DeliveryStatus.SENDING, lease_until=utcnow() + timedelta(minutes=5)
            )
        )
    deliver_batch(rt, [r.id for r in _rows(sessions)])
    assert _rows(sessions)[0].status == "sending"
    assert channels["email"].calls == 0


def test_transient_errors_defer_until_retry_after_then_fail_when_exhausted(database_url, tmp_path):
    """A 429 defers the row by retry_after; after max_attempts it fails with the last error."""
    # Given a provider that always answers 429 with Retry-After: 30
    sessions, _ids, run_id = _planned(database_url, tmp_path, members=1, max_attempts=2)
    channels = scripted_channels(
        lambda m: TransientDeliveryError("429 Too Many Requests", retry_after=30, code="20429")
    )
    rt = runtime_for(database_url, tmp_path, channels=channels)
    plan_run(rt, run_id)
    row_id = _rows(sessions)[0].id
    # When it is delivered once
    before = utcnow()
    deliver_batch(rt, [row_id])
    # Then it waits in the store until retry_after has passed
    row = _rows(sessions)[0]
    assert (row.status, row.reason, row.attempts) == ("deferred", "retry", 1)
    assert timedelta(seconds=29) <= row.not_before - before <= timedelta(seconds=31)
    deliver_batch(rt, [row_id])
    assert channels["email"].calls == 1  # not due yet: not attempted again
    # When the time has come and it fails again
    with sessions.begin() as s:
        s.execute(update(Delivery).values(not_before=utcnow() - timedelta(seconds=1)))
    deliver_batch(rt, [row_id])
    # Then it has used its two attempts and failed with the provider's words
    row = _rows(sessions)[0]
    assert (row.status, row.reason, row.attempts) == ("failed", "retries_exhausted", 2)
    assert "429 Too Many Requests" in row.detail


def test_permanent_errors_fail_with_their_reason(database_url, tmp_path):
    """InvalidRecipient and PermanentDeliveryError end 'failed' with distinct reasons, once."""
    sessions, ids, run_id = _planned(database_url, tmp_path, members=2)
    errors = {
        ids[0]: InvalidRecipient("not a mobile number", code="21614"),
        ids[1]: PermanentDeliveryError("content rejected", code="30007"),
    }
    channels = scripted_channels(lambda m: errors[m.member_id])
    rt = runtime_for(database_url, tmp_path, channels=channels)
    plan_run(rt, run_id)
    deliver_batch(rt, [r.id for r in _rows(sessions)])
    got = {r.member_id: (r.status, r.reason) for r in _rows(sessions)}
    assert got == {ids[0]: ("failed", "invalid_recipient"), ids[1]: ("failed", "permanent")}


def test_a_render_error_fails_only_that_member(database_url, tmp_path):
    """A template that breaks for one member's data fails that delivery, not the batch."""
    # Given a template that needs attributes.vip_code, which one member lacks
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        good = add_member(s, attributes={"vip_code": "V1"}).id
    templates = tmp_path / "templates" / "vip"
    templates.mkdir(parents=True)
    for part in ("subject", "html", "text"):
        (templates / f"email.{part}.j2").write_text("Code {{ member.attributes.vip_code }}")
    path = write_campaign(tmp_path, channels="[email]")
    path.write_text(path.read_text().replace("template: winter-double-points", "template: vip"))
    created = create(sessions, path)
    with sessions.begin() as s:
        bad = add_member(s, attributes={}).id
    claim_due_runs(sessions)
    rt = runtime_for(database_url, tmp_path)
    plan_run(rt, created.run_id)
    # When the batch is delivered
    deliver_batch(rt, [r.id for r in _rows(sessions)])
    # Then the good member got the message and the other failed with the template's place
    rows = {r.member_id: r for r in _rows(sessions)}
    assert rows[good].status == "sent"
    assert (rows[bad].status, rows[bad].reason) == ("failed", "render_error")
    assert "vip/email.subject.j2" in rows[bad].detail


def test_cancelled_campaign_suppresses_open_rows(database_url, tmp_path):
    """Rows of a cancelled campaign are suppressed with reason 'cancelled' and never sent."""
    sessions, _ids, run_id = _planned(database_url, tmp_path, members=3)
    channels = scripted_channels()
    rt = runtime_for(database_url, tmp_path, channels=channels)
    plan_run(rt, run_id)
    with sessions.begin() as s:
        s.execute(update(Campaign).values(status=CampaignStatus.CANCELLED))
    deliver_batch(rt, [r.id for r in _rows(sessions)])
    assert {(r.status, r.reason) for r in _rows(sessions)} == {("suppressed", "cancelled")}
    assert channels["email"].calls == 0


def test_sweep_requeues_lost_rows_and_expires_leases(database_url, tmp_path):
    """The sweeper re-enqueues rows queued past the lease, due deferred rows and stuck plans."""
    # Given rows whose jobs were lost, a stale lease, a due deferral, and a stuck plan
    sessions, _ids, run_id = _planned(database_url, tmp_path, members=4)
    broker = StubBroker()
    for q in ("deliver", "plan"):
        broker.declare_queue(q)
    rt = runtime_for(database_url, tmp_path, broker=broker, lease_seconds=60)
    plan_run(runtime_for(database_url, tmp_path), run_id)
    rows = _rows(sessions)
    old = utcnow() - timedelta(minutes=5)
    with sessions.begin() as s:
        s.execute(update(Delivery).values(enqueued_at=old))
        s.execute(
            update(Delivery)
            .where(Delivery.id == rows[1].id)
            .values(status=DeliveryStatus.SENDING, lease_until=utcnow() - timedelta(seconds=1))
        )
        s.execute(
            update(Delivery)
            .where(Delivery.id == rows[2].id)
            .values(status=DeliveryStatus.DEFERRED, not_before=utcnow() + timedelta(hours=1))
        )
        s.execute(
            update(Delivery)
            .where(Delivery.id == rows[3].id)
            .values(
                status=DeliveryStatus.DEFERRED,
                not_before=utcnow() - timedelta(seconds=1),
                enqueued_at=None,
            )
        )
        stuck = CampaignRun(
            campaign_id=rows[0].campaign_id,
            campaign_version_id=rows[0].campaign_version_id,
            occurrence="stuck",
            due_at=old,
            status=RunStatus.PLANNING,
            claimed_at=old,
        )
        s.add(stuck)
    # When the sweeper runs, and runs again at once
    first = sweep(rt)
    second = sweep(rt)
    # Then the lost and due rows were enqueued once, the lease expired, the plan re-sent
    assert (first.expired_leases, first.requeued, first.replanned) == (1, 2, 1)
    assert (second.expired_leases, second.requeued, second.replanned) == (0, 0, 0)
    assert _rows(sessions)[1].status == "unknown"
    assert len(broker.queues["deliver"].queue) == 1
    assert len(broker.queues["plan"].queue) == 1


def test_sweep_requeues_exactly_the_open_rows_that_are_due_and_not_held(database_url, tmp_path):
    """Every mix of status, enqueue age and not_before: requeued iff open, due and not held."""
    # Given one row for each status (open and not), enqueue (never, live,
    # lost) and not_before (none, past, future)
    statuses = [DeliveryStatus.PENDING, DeliveryStatus.DEFERRED, DeliveryStatus.SENT]
    now = utcnow()
    enqueues = {
        "never": None,
        "live": now - timedelta(seconds=10),
        "lost": now - timedelta(hours=1),
    }
    waits = {"none": None, "past": now - timedelta(seconds=1), "future": now + timedelta(hours=1)}
    cases = [
        (status, enqueued, wait) for status in statuses for enqueued in enqueues for wait in waits
    ]
    sessions, _ids, run_id = _planned(database_url, tmp_path, members=len(cases))
    plan_run(runtime_for(database_url, tmp_path), run_id)
    rows = _rows(sessions)
    with sessions.begin() as s:
        for row, (status, enqueued, wait) in zip(rows, cases, strict=True):
            s.execute(
                update(Delivery)
                .where(Delivery.id == row.id)
                .values(status=status, enqueued_at=enqueues[enqueued], not_before=waits[wait])
            )
    broker = StubBroker()
    broker.declare_queue("deliver")
    rt = runtime_for(database_url, tmp_path, broker=broker, lease_seconds=60, batch_size=100)
    # When the sweeper runs
    result = sweep(rt)
    # Then it enqueued the open rows whose time has come and whose job is not
    # live, each once, and no other
    expected = [
        row.id
        for row, (status, enqueued, wait) in zip(rows, cases, strict=True)
        if status != DeliveryStatus.SENT and enqueued != "live" and wait != "future"
    ]
    assert len(expected) == 8
    assert result.requeued == len(expected)
    assert _job_args(broker, "deliver") == [expected]


def test_due_runs_are_claimed_once_even_by_concurrent_schedulers(database_url, tmp_path):
    """Many claimers racing over the same due runs claim each run exactly once."""
    from concurrent.futures import ThreadPoolExecutor

    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        add_member(s)
    for i in range(6):
        create(sessions, write_campaign(tmp_path, name=f"race-{i}"))
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: claim_due_runs(sessions_for(database_url)), range(6)))
    claimed = [run for result in results for run in result]
    assert len(claimed) == 6
    assert len(set(claimed)) == 6
    with sessions() as s:
        assert s.scalar(select(func.count()).where(CampaignRun.status == RunStatus.PLANNING)) == 6


@pytest.mark.parametrize("status", ["paused", "cancelled"])
def test_runs_of_inactive_campaigns_are_not_claimed(database_url, tmp_path, status):
    """Only active campaigns' runs are claimed."""
    sessions = sessions_for(database_url)
    create(sessions, write_campaign(tmp_path))
    with sessions.begin() as s:
        s.execute(update(Campaign).values(status=status))
    assert claim_due_runs(sessions) == []


@pytest.mark.parametrize(
    ("on_ambiguous", "expected"),
    [("skip", ("unknown", "ambiguous")), ("resend", ("deferred", "retry"))],
)
def test_an_ambiguous_timeout_is_not_retried_unless_the_campaign_says_resend(
    database_url, tmp_path, on_ambiguous, expected
):
    """A read timeout (the provider may have it) ends 'unknown'; with resend it is retried."""
    # Given a provider that times out after possibly accepting the message
    sessions, _ids, run_id = _planned(database_url, tmp_path, members=1, on_ambiguous=on_ambiguous)
    timeout = TransientDeliveryError("no answer in 10 s; it may have accepted", ambiguous=True)
    channels = scripted_channels(lambda m: timeout)
    rt = runtime_for(database_url, tmp_path, channels=channels)
    plan_run(rt, run_id)
    # When it is delivered
    deliver_batch(rt, [r.id for r in _rows(sessions)])
    # Then it is unknown (not sent twice), or deferred for a retry when resending is chosen
    row = _rows(sessions)[0]
    assert (row.status, row.reason) == expected


@pytest.mark.parametrize(
    ("reported", "answer", "expected"),
    [
        # accepted, and reported failed before the worker recorded the answer
        ("failed", None, ("failed", "provider:30007", True)),
        # reported delivered, while the answer to the request was lost
        ("delivered", "timeout", ("delivered", None, False)),
    ],
)
def test_a_status_reported_while_sending_is_kept_by_the_record(
    database_url, tmp_path, reported, answer, expected
):
    """A provider's report that beats the worker's record stands; the record adds the id."""
    sessions, _ids, run_id = _planned(database_url, tmp_path, members=1)
    seen: list[str] = []

    def provider(message):
        # Given the provider's callback arriving while the worker waits for its answer
        with sessions.begin() as s:
            seen.append(s.get(Delivery, message.delivery_id).status)
            apply_provider_status(
                s,
                delivery_id=message.delivery_id,
                status=DeliveryStatus(reported),
                reason="provider:30007" if reported == "failed" else None,
                detail=f"reported {reported}",
            )
        if answer == "timeout":
            return TransientDeliveryError("no answer in 10 s", ambiguous=True)
        return None

    rt = runtime_for(database_url, tmp_path, channels=scripted_channels(provider))
    plan_run(rt, run_id)
    # When the deliver job records the provider's answer
    deliver_batch(rt, [r.id for r in _rows(sessions)])
    # Then the reported status, reason and detail stand, with the provider's id when it answered
    [row] = _rows(sessions)
    assert seen == ["sending"]
    assert (row.status, row.reason, row.provider_message_id is not None) == expected
    assert row.detail == f"reported {reported}"
    assert row.lease_until is None
    assert (row.sent_at is not None) == (answer is None)


def test_one_direct_mail_piece_per_household_across_batches(database_url, tmp_path):
    """Two members at one address, in different deliver jobs: one piece, one 'household'."""
    # Given two members of one household (written differently) and one elsewhere
    sessions = sessions_for(database_url)
    address = {"address_city": "Springfield", "address_state": "IL", "address_country": "US"}
    with sessions.begin() as s:
        first = add_member(
            s,
            consents={"direct_mail": "opted_in"},
            address_line1="12 Main Street",
            address_zip="62701",
            **address,
        ).id
        second = add_member(
            s,
            consents={"direct_mail": "opted_in"},
            address_line1="12 main st.",
            address_zip="62701-1234",
            **address,
        ).id
        other = add_member(
            s,
            consents={"direct_mail": "opted_in"},
            address_line1="14 Main Street",
            address_zip="62701",
            **address,
        ).id
    created = create(sessions, write_campaign(tmp_path, channels="[direct_mail]"))
    claim_due_runs(sessions)
    channels = scripted_channels(names=("sms", "email", "push", "direct_mail"))
    rt = runtime_for(database_url, tmp_path, channels=channels)
    plan_run(rt, created.run_id)
    rows = {r.member_id: r.id for r in _rows(sessions)}
    # When each member's row is delivered by its own job, the second household member last
    for member in (first, other, second):
        deliver_batch(rt, [rows[member]])
    # Then the household got one piece and the other member's row says why not
    after = {r.member_id: r for r in _rows(sessions)}
    assert after[first].status == "sent"
    assert after[other].status == "sent"
    assert (after[second].status, after[second].reason) == ("suppressed", "household")
    assert after[second].detail == f"same address as delivery {rows[first]}"
    assert sorted(m.member_id for m in channels["direct_mail"].sent) == sorted([first, other])


def test_an_invalid_push_device_is_revoked_and_the_next_push_goes_elsewhere(database_url, tmp_path):
    """InvalidRecipient on push revokes that token; the member's next message uses email."""
    from store import PushToken

    # Given a member with a dead push token, consented to push and email
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        member = add_member(
            s, consents={"push": "opted_in", "email": "opted_in"}, push_token="dead-token"
        ).id
    channels = scripted_channels(
        lambda m: InvalidRecipient("UNREGISTERED") if m.channel == "push" else None
    )
    rt = runtime_for(database_url, tmp_path, channels=channels)
    for name in ("first", "second"):
        created = create(sessions, write_campaign(tmp_path, name=name))
        claim_due_runs(sessions)
        plan_run(rt, created.run_id)
        deliver_batch(rt, [r.id for r in _rows(sessions, created.run_id)])
    # Then the first delivery failed on push, the token is revoked, the second went by email
    first, second = _rows(sessions)
    assert (first.status, first.reason, first.channel) == ("failed", "invalid_recipient", "push")
    assert (second.status, second.channel) == ("sent", "email")
    with sessions() as s:
        token = s.scalars(select(PushToken).where(PushToken.member_id == member)).one()
        assert token.revoked_at is not None
