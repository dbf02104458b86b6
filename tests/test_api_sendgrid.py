"""SendGrid's signed Event Webhook: outcomes move deliveries, unsubscribes change consent."""

from __future__ import annotations

import itertools
import time

import pytest
from sqlalchemy import func, select

from store import Consent, ConsentEvent, Delivery

from .support import add_member
from .test_api import SG_SIGNATURE, SG_TIMESTAMP, seed, sendgrid_signature, start_api
from .test_feedback import add_delivery

EMAIL = "Ada@Example.com"
_ids = itertools.count(1)


@pytest.fixture
def app(database_url, tmp_path):
    with start_api(database_url, tmp_path) as a:
        yield a


def event(kind: str, delivery_id: int | None, **extra) -> dict:
    """One SendGrid event as the webhook carries it (custom args at the top level)."""
    body = {
        "email": EMAIL.lower(),
        "timestamp": 1_790_000_000,
        "event": kind,
        "sg_event_id": f"sg-event-{next(_ids)}",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        **extra,
    }
    if delivery_id is not None:
        body["delivery_id"] = str(delivery_id)
    return body


def email_delivery(app, status="sent") -> tuple[int, int]:
    """A member with an email address and a sent email delivery: (member id, delivery id)."""
    with app.sessions.begin() as s:
        member_id = add_member(s, email=EMAIL, consents={"email": "opted_in"}).id
        delivery_id = add_delivery(s, member_id, status, channel="email").id
    return member_id, delivery_id


def row(app, delivery_id) -> tuple:
    with app.sessions() as s:
        d = s.get(Delivery, delivery_id)
        return d.status, d.reason


def email_events(app, member_id) -> list[tuple]:
    with app.sessions() as s:
        return s.execute(
            select(ConsentEvent.status, ConsentEvent.source)
            .where(ConsentEvent.member_id == member_id, ConsentEvent.channel == "email")
            .order_by(ConsentEvent.id)
        ).all()


@pytest.mark.parametrize(
    ("kind", "extra", "expected"),
    [
        ("delivered", {"response": "250 OK"}, ("delivered", None)),
        (
            "bounce",
            {"type": "bounce", "reason": "550 5.1.1 no such user"},
            ("bounced", "bounce:bounce"),
        ),
        (
            "bounce",
            {"type": "blocked", "reason": "blocked by policy"},
            ("bounced", "bounce:blocked"),
        ),
        ("dropped", {"reason": "Bounced Address"}, ("failed", "dropped:Bounced Address")),
    ],
)
def test_outcome_events_move_the_delivery(app, kind, extra, expected):
    """delivered -> delivered; bounce -> bounced (bounce:<type>); dropped -> failed (dropped:…)."""
    # Given a sent email delivery
    _, delivery_id = email_delivery(app)
    # When SendGrid reports the outcome
    response = app.sendgrid([event(kind, delivery_id, **extra)])
    # Then the delivery moved with the expected reason
    assert (200, expected) == (response.status_code, row(app, delivery_id))


@pytest.mark.parametrize("kind", ["spamreport", "unsubscribe", "group_unsubscribe"])
def test_unsubscribe_kinds_opt_the_member_out_of_email(app, kind):
    """spamreport, unsubscribe and group_unsubscribe opt out, source sendgrid-<event>."""
    # Given a member opted in to email with a sent delivery
    member_id, delivery_id = email_delivery(app)
    # When SendGrid reports the event
    app.sendgrid([event(kind, delivery_id)])
    # Then email consent is opted out, audited once, and the delivery is unchanged
    with app.sessions() as s:
        consent = s.get(Consent, (member_id, "email"))
    assert ("opted_out", f"sendgrid-{kind}") == (consent.status, consent.source)
    assert [("opted_out", f"sendgrid-{kind}")] == email_events(app, member_id)
    assert row(app, delivery_id) == ("sent", None)


def test_an_unsubscribe_without_delivery_id_finds_members_by_address(app):
    """The event's address finds every member with it, whatever the case."""
    # Given two members with the same address in different cases
    with app.sessions.begin() as s:
        ids = [add_member(s, email=e).id for e in (EMAIL, EMAIL.upper())]
    # When an unsubscribe event without our custom argument arrives
    app.sendgrid([event("unsubscribe", None)])
    # Then both are opted out
    assert [email_events(app, i) for i in ids] == [[("opted_out", "sendgrid-unsubscribe")]] * 2


@pytest.mark.parametrize("kind", ["open", "click", "processed", "deferred", "group_resubscribe"])
def test_other_events_are_ignored(app, kind):
    """Engagement and in-flight events change nothing."""
    _, delivery_id = email_delivery(app)
    before = app.snapshot()
    assert app.sendgrid([event(kind, delivery_id)]).status_code == 200
    assert before == app.snapshot()


def test_duplicate_events_are_applied_once(app):
    """The same sg_event_id, within a batch or resent later, is applied once."""
    # Given a member opted in, who opts out through SendGrid
    member_id, delivery_id = email_delivery(app)
    unsubscribe = event("unsubscribe", delivery_id)
    app.sendgrid([unsubscribe, unsubscribe])
    # When they opt back in elsewhere, and SendGrid resends the same event
    with app.sessions.begin() as s:
        s.get(Consent, (member_id, "email")).status = "opted_in"
    response = app.sendgrid([unsubscribe])
    # Then the resent event did nothing: one audit row, consent as the member left it
    with app.sessions() as s:
        status = s.get(Consent, (member_id, "email")).status
        seen = s.scalar(select(func.count()).select_from(ConsentEvent))
    assert (response.status_code, status, seen) == (200, "opted_in", 1)


def test_events_of_one_request_apply_together(app):
    """A batch with several events for several deliveries applies each."""
    # Given two sent deliveries
    _, first = email_delivery(app)
    _, second = email_delivery(app)
    # When one batch reports both, and a later delivered for a bounced one
    app.sendgrid(
        [
            event("processed", first),
            event("delivered", first),
            event("bounce", second, type="bounce"),
            event("delivered", second),
            event("open", first),
        ]
    )
    # Then each moved forward, and bounced stayed bounced
    assert [
        row(app, first),
        row(app, second),
    ] == [("delivered", None), ("bounced", "bounce:bounce")]


def test_a_delivered_event_resolves_an_unknown_row(app):
    """An ``unknown`` row (its worker's lease expired) is resolved by the provider's report."""
    _, delivery_id = email_delivery(app, status="unknown")
    app.sendgrid([event("delivered", delivery_id)])
    assert row(app, delivery_id) == ("delivered", None)


@pytest.mark.parametrize("age", [601, 3600, -601])
def test_a_replayed_or_future_timestamp_is_refused(app, age):
    """A correctly signed request outside the 10-minute window is 403 and changes nothing."""
    # Given a member and a correctly signed unsubscribe event from `age` seconds ago
    _, delivery_id = email_delivery(app)
    before = app.snapshot()
    # When it is posted
    response = app.sendgrid([event("unsubscribe", delivery_id)], age=age)
    # Then it is refused and nothing changed
    assert response.status_code == 403
    assert before == app.snapshot()


def test_a_recent_timestamp_is_accepted(app):
    """Nine minutes old is inside the window."""
    member_id, delivery_id = email_delivery(app)
    assert app.sendgrid([event("unsubscribe", delivery_id)], age=540).status_code == 200
    assert len(email_events(app, member_id)) == 1


@pytest.mark.parametrize("body", ["not json", '{"event": "delivered"}', "[1, 2]"])
def test_a_signed_body_that_is_not_a_list_of_events_is_400(app, body):
    """A signed but malformed body is a bad request and changes nothing."""
    seed(app)
    before = app.snapshot()
    assert app.sendgrid(body).status_code == 400
    assert before == app.snapshot()


def test_a_tampered_body_is_refused(app):
    """A signature over one body does not hold for another."""
    # Given a member and a signed event
    _, delivery_id = email_delivery(app)
    before = app.snapshot()
    signed = '[{"event": "open"}]'
    timestamp = str(int(time.time()))
    tampered = f'[{{"event": "unsubscribe", "delivery_id": "{delivery_id}"}}]'
    # When the body is swapped under the signature
    response = app.client.post(
        "/webhooks/sendgrid/events",
        content=tampered,
        headers={SG_SIGNATURE: sendgrid_signature(signed, timestamp), SG_TIMESTAMP: timestamp},
    )
    # Then it is refused and nothing changes
    assert response.status_code == 403
    assert before == app.snapshot()


def test_events_with_odd_fields_are_skipped(app):
    """Events missing our custom argument, or with values of the wrong type, change nothing."""
    # Given a sent delivery
    _, delivery_id = email_delivery(app)
    before = app.snapshot()
    # When events arrive that cannot be matched or understood
    odd = [
        {"event": ["delivered"]},
        event("delivered", None),
        {**event("delivered", None), "delivery_id": "abc"},
        {**event("delivered", None), "delivery_id": 2**70},
        {**event("unsubscribe", None), "email": 42},
    ]
    response = app.sendgrid(odd)
    # Then they are acknowledged and skipped (only their event ids are remembered)
    after = app.snapshot()
    assert response.status_code == 200
    assert {**after, "provider_events": []} == {**before, "provider_events": []}
    assert row(app, delivery_id) == ("sent", None)
