"""Twilio webhooks: status callbacks move deliveries forward only; SMS keywords change consent."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from store import Consent, ConsentEvent, Delivery

from .support import add_member
from .test_api import PUBLIC_URL, TWILIO_TOKEN, seed, start_api
from .test_feedback import add_delivery

STATUS = "/webhooks/twilio/status"
INBOUND = "/webhooks/twilio/inbound"
PHONE = "+14155550100"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


@pytest.fixture
def app(database_url, tmp_path):
    with start_api(database_url, tmp_path) as a:
        yield a


def callback(sid: str, status: str, **extra: str) -> dict[str, str]:
    """The fields of a Twilio message status callback."""
    return {
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": status,
        "SmsStatus": status,
        "AccountSid": "AC" + "0" * 32,
        "From": "+14155559999",
        "To": PHONE,
        "ApiVersion": "2010-04-01",
        **extra,
    }


def sms(body: str, phone: str = PHONE) -> dict[str, str]:
    """The fields of an inbound SMS webhook."""
    return {
        "MessageSid": "SM" + "a" * 32,
        "AccountSid": "AC" + "0" * 32,
        "From": phone,
        "To": "+14155559999",
        "Body": body,
        "NumMedia": "0",
    }


def delivery(app, delivery_id):
    with app.sessions() as s:
        return s.get(Delivery, delivery_id)


def sms_consent(app, member_id):
    """(status, source) of the member's SMS consent and its events' (status, source, detail)."""
    with app.sessions() as s:
        consent = s.get(Consent, (member_id, "sms"))
        events = s.execute(
            select(ConsentEvent.status, ConsentEvent.source, ConsentEvent.detail)
            .where(ConsentEvent.member_id == member_id, ConsentEvent.channel == "sms")
            .order_by(ConsentEvent.id)
        ).all()
    return (consent.status, consent.source) if consent else None, events


def test_delivered_then_a_late_sent_stays_delivered(app):
    """A `sent` callback arriving after `delivered` does not move the delivery back."""
    # Given a sent SMS delivery
    _, delivery_id = seed(app)
    # When Twilio reports delivered, then (late) sent and queued
    replies = [
        app.twilio(STATUS, callback("SM1", status)).status_code
        for status in ("delivered", "sent", "queued")
    ]
    # Then every callback is acknowledged and the delivery stays delivered
    assert replies == [204, 204, 204]
    assert (
        delivery(app, delivery_id).status,
        delivery(app, delivery_id).reason,
    ) == ("delivered", None)


def test_failed_after_delivered_is_ignored(app):
    """Once delivered, a failure report changes nothing."""
    # Given a delivered SMS
    _, delivery_id = seed(app)
    app.twilio(STATUS, callback("SM1", "delivered"))
    # When Twilio reports it undelivered
    app.twilio(STATUS, callback("SM1", "undelivered", ErrorCode="30003"))
    # Then it is still delivered
    assert delivery(app, delivery_id).status == "delivered"


@pytest.mark.parametrize("status", ["undelivered", "failed"])
def test_undelivered_and_failed_fail_with_the_error_code(app, status):
    """undelivered/failed -> failed, reason provider:<ErrorCode>."""
    # Given a sent SMS
    _, delivery_id = seed(app)
    # When Twilio reports it did not arrive
    response = app.twilio(STATUS, callback("SM1", status, ErrorCode="30005"))
    # Then the delivery failed with the provider's code
    row = delivery(app, delivery_id)
    assert (response.status_code, row.status, row.reason) == (204, "failed", "provider:30005")
    assert "30005" in row.detail


def test_error_21610_also_opts_the_member_out_of_sms(app):
    """Twilio 21610 (the handset sent STOP) fails the delivery and records the opt-out."""
    # Given a member opted in to SMS with a sent delivery
    member_id, delivery_id = seed(app, phone=PHONE, consents={"sms": "opted_in"})
    # When Twilio reports error 21610, twice
    for _ in range(2):
        app.twilio(STATUS, callback("SM1", "failed", ErrorCode="21610"))
    # Then the delivery failed and SMS consent is opted out once, by twilio-21610
    consent, events = sms_consent(app, member_id)
    assert delivery(app, delivery_id).reason == "provider:21610"
    assert consent == ("opted_out", "twilio-21610")
    assert [e[:2] for e in events] == [("opted_out", "twilio-21610")]


def sending(app, **member) -> tuple[int, int]:
    """A member and an SMS delivery still ``sending`` (no SID recorded yet)."""
    with app.sessions.begin() as s:
        member_id = add_member(s, **member).id
        return member_id, add_delivery(s, member_id, "sending").id


def test_a_callback_naming_its_delivery_moves_a_row_still_sending(app):
    """``?delivery=<id>`` finds a row whose SID the worker has not recorded yet."""
    # Given a member opted in to SMS whose delivery is still being sent
    member_id, delivery_id = sending(app, phone=PHONE, consents={"sms": "opted_in"})
    # When Twilio reports it failed with 21610 at the URL naming the delivery
    response = app.twilio(
        f"{STATUS}?delivery={delivery_id}", callback("SM7", "failed", ErrorCode="21610")
    )
    # Then the delivery failed and the member is opted out of SMS
    row = delivery(app, delivery_id)
    assert (response.status_code, row.status, row.reason) == (204, "failed", "provider:21610")
    assert sms_consent(app, member_id)[0] == ("opted_out", "twilio-21610")


def test_without_the_delivery_a_row_still_sending_is_not_found(app):
    """Matched by SID alone (a message sent before the URL named deliveries), nothing moves."""
    _, delivery_id = sending(app)
    before = app.snapshot()
    assert app.twilio(STATUS, callback("SM7", "failed", ErrorCode="30007")).status_code == 204
    assert before == app.snapshot()
    assert delivery(app, delivery_id).status == "sending"


def test_the_delivery_in_the_url_is_covered_by_the_signature(app):
    """A callback signed for one delivery, replayed at another's URL, is refused."""
    # Given two deliveries still sending, and a callback Twilio signed for the first
    _, first = sending(app)
    _, second = sending(app)
    form = callback("SM7", "failed", ErrorCode="30007")
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(
        f"{PUBLIC_URL}{STATUS}?delivery={first}", form
    )
    before = app.snapshot()
    # When it is posted at the second one's URL
    response = app.twilio(f"{STATUS}?delivery={second}", form, signature=signature)
    # Then it is forbidden and nothing changed
    assert response.status_code == 403
    assert before == app.snapshot()


def test_a_malformed_delivery_in_the_url_falls_back_to_the_sid(app):
    """A signed URL whose ``delivery`` is not a number is matched by MessageSid."""
    _, delivery_id = seed(app)
    response = app.twilio(f"{STATUS}?delivery=x1", callback("SM1", "delivered"))
    assert (response.status_code, delivery(app, delivery_id).status) == (204, "delivered")


def test_a_callback_for_an_unknown_message_changes_nothing(app):
    """An unknown MessageSid is acknowledged (Twilio would retry otherwise) and ignored."""
    seed(app)
    before = app.snapshot()
    assert app.twilio(STATUS, callback("SM404", "delivered")).status_code == 204
    assert before == app.snapshot()


@pytest.mark.parametrize(
    "body",
    [
        "STOP",
        "stop",
        " Stop \n",
        "STOPALL",
        "unsubscribe",
        "Cancel",
        "END",
        "quit",
        "REVOKE",
        "OptOut",
    ],
)
def test_each_stop_keyword_opts_out_with_an_audit_row(app, body):
    """Any opt-out keyword, in any case and with surrounding spaces, opts the sender out of SMS."""
    # Given a member opted in to SMS
    member_id, _ = seed(app, phone=PHONE, consents={"sms": "opted_in"})
    # When they text the keyword
    response = app.twilio(INBOUND, sms(body))
    # Then consent is opted out with one audit row naming the keyword, and no reply is sent
    consent, events = sms_consent(app, member_id)
    assert consent == ("opted_out", "sms-keyword")
    assert [("opted_out", "sms-keyword", body.strip().upper())] == events
    assert (response.status_code, response.text) == (200, EMPTY_TWIML)
    assert response.headers["content-type"].startswith("text/xml")


@pytest.mark.parametrize("keyword", ["START", "unstop"])
def test_start_opts_back_in(app, keyword):
    """START or UNSTOP after STOP opts the member back in; both changes are audited."""
    # Given a member who texted STOP
    member_id, _ = seed(app, phone=PHONE, consents={"sms": "opted_in"})
    app.twilio(INBOUND, sms("STOP"))
    # When they text START
    app.twilio(INBOUND, sms(keyword))
    # Then they are opted in again, with both changes recorded
    consent, events = sms_consent(app, member_id)
    assert consent == ("opted_in", "sms-keyword")
    assert [e[0] for e in events] == ["opted_out", "opted_in"]


@pytest.mark.parametrize("phone", [PHONE, "+14155550999"])
def test_help_answers_with_twiml_and_changes_nothing(app, phone):
    """HELP gets a TwiML reply with the help text, from members and unknown phones alike."""
    # Given a member
    seed(app, phone=PHONE)
    before = app.snapshot()
    # When HELP arrives from their phone or an unknown one
    response = app.twilio(INBOUND, sms(" help ", phone))
    # Then the help text is the reply, and nothing changed
    assert response.headers["content-type"].startswith("text/xml")
    assert response.text.startswith('<?xml version="1.0" encoding="UTF-8"?><Response><Message>')
    assert "Reply STOP to unsubscribe" in response.text
    assert "&amp;" in response.text  # "Msg & data rates" is escaped
    assert before == app.snapshot()


@pytest.mark.parametrize(
    ("body", "phone"),
    [("thanks!", PHONE), ("STOP now", PHONE), ("STOP", "+14155550999"), ("START", "+1415")],
)
def test_other_texts_and_unknown_phones_change_nothing(app, body, phone):
    """Non-keywords, and keywords from a phone no member has, get an empty reply."""
    seed(app, phone=PHONE, consents={"sms": "opted_in"})
    before = app.snapshot()
    response = app.twilio(INBOUND, sms(body, phone))
    assert (response.status_code, response.text) == (200, EMPTY_TWIML)
    assert before == app.snapshot()


def test_stop_from_a_shared_phone_opts_out_every_member_on_it(app):
    """A household phone is one handset: STOP opts out each member with that number."""
    # Given two members sharing a phone
    with app.sessions.begin() as s:
        ids = [add_member(s, phone=PHONE, consents={"sms": "opted_in"}).id for _ in range(2)]
    # When the phone texts STOP
    app.twilio(INBOUND, sms("STOP"))
    # Then both are opted out
    assert [sms_consent(app, i)[0] for i in ids] == [("opted_out", "sms-keyword")] * 2


def test_the_signature_may_cover_a_query_string(app):
    """Query parameters are part of the signed URL."""
    # Given a sent delivery
    _, delivery_id = seed(app)
    # When Twilio calls a status URL with a query, signed for the public URL with that query
    response = app.twilio(STATUS + "?source=sms", callback("SM1", "delivered"))
    # Then it is accepted and applied
    assert (response.status_code, delivery(app, delivery_id).status) == (204, "delivered")
