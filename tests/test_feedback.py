"""Provider feedback in the store (workers.feedback) and unsubscribe tokens, on SQLite and PG."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import struct

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select

from store import (
    Campaign,
    CampaignVersion,
    Consent,
    ConsentEvent,
    Delivery,
    DeliveryStatus,
    make_sessionmaker,
    utcnow,
)
from store.models import Base, ProviderEvent
from workers.feedback import (
    apply_provider_status,
    find_member_by_email,
    find_member_by_phone,
    find_members_by_phone,
    record_event_once,
    set_consent,
)
from workers.unsubscribe import BadToken, make_token, read_token, unsubscribe_url

from .support import add_member

KEY = b"k" * 32
S = DeliveryStatus
_keys = itertools.count(1)


def add_delivery(session, member_id: int, status: str = S.SENT, **fields) -> Delivery:
    """A delivery of a minimal campaign to ``member_id`` (creating the campaign once)."""
    campaign = session.scalar(select(Campaign).where(Campaign.name == "feedback"))
    if campaign is None:
        campaign = Campaign(name="feedback", kind="broadcast", category="marketing")
        session.add(campaign)
        session.flush()
        version = CampaignVersion(
            campaign_id=campaign.id, version=1, spec={}, templates={}, source="", digest=""
        )
        session.add(version)
        session.flush()
    version_id = session.scalar(
        select(CampaignVersion.id).where(CampaignVersion.campaign_id == campaign.id)
    )
    delivery = Delivery(
        dedupe_key=f"test:{next(_keys)}",
        campaign_id=campaign.id,
        campaign_version_id=version_id,
        member_id=member_id,
        category="marketing",
        channels="email,sms",
        channel=fields.pop("channel", "sms"),
        status=status,
        **fields,
    )
    session.add(delivery)
    session.flush()
    return delivery


@pytest.fixture
def sessions(engine):
    return make_sessionmaker(engine)


def test_migrations_match_the_models(engine):
    """Alembic finds nothing to autogenerate: the migrations create exactly the models."""
    # Given a database migrated to head (the fixture)
    # When alembic compares it with the models
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
    # Then there is no difference
    assert diff == []


def test_set_consent_records_a_change_once(sessions):
    """A change writes the consent and one audit row; repeating it changes nothing."""
    # Given a member opted in to SMS
    with sessions.begin() as s:
        member_id = add_member(s, consents={"sms": "opted_in"}).id
    # When they opt out twice, then back in
    with sessions.begin() as s:
        results = [
            set_consent(s, member_id, "sms", "opted_out", source="sms-keyword", detail="STOP"),
            set_consent(s, member_id, "sms", "opted_out", source="sms-keyword", detail="STOP"),
            set_consent(s, member_id, "sms", "opted_in", source="sms-keyword", detail="START"),
        ]
    # Then the first and last calls changed it, with one event each
    with sessions() as s:
        consent = s.get(Consent, (member_id, "sms"))
        events = s.execute(
            select(ConsentEvent.status, ConsentEvent.source, ConsentEvent.detail)
            .where(ConsentEvent.member_id == member_id)
            .order_by(ConsentEvent.id)
        ).all()
    assert results == [True, False, True]
    assert (consent.status, consent.source) == ("opted_in", "sms-keyword")
    assert events == [("opted_out", "sms-keyword", "STOP"), ("opted_in", "sms-keyword", "START")]


def test_set_consent_creates_a_missing_row(sessions):
    """A member with no consent on a channel gets a row and an event."""
    # Given a member with no email consent row
    with sessions.begin() as s:
        member_id = add_member(s, consents={}).id
    # When they opt out of email
    with sessions.begin() as s:
        changed = set_consent(s, member_id, "email", "opted_out", source="unsubscribe-link")
    # Then the row and one event exist
    with sessions() as s:
        assert s.get(Consent, (member_id, "email")).status == "opted_out"
        assert s.scalar(select(func.count()).select_from(ConsentEvent)) == 1
    assert changed is True


def test_members_are_found_by_phone_and_by_email_ignoring_case(sessions):
    """Email matches ignore case; deleted members are not found; misses give None."""
    # Given a member, and a deleted member with another phone
    with sessions.begin() as s:
        member_id = add_member(s, email="Ada.Lovelace@Example.com", phone="+14155550100").id
        add_member(s, phone="+14155550199", deleted_at=utcnow())
    # When they are looked up
    with sessions() as s:
        by_email = find_member_by_email(s, " ada.lovelace@EXAMPLE.COM ")
        by_phone = find_member_by_phone(s, "+14155550100")
        deleted = find_members_by_phone(s, "+14155550199")
        missing = (find_member_by_email(s, "x@example.com"), find_member_by_phone(s, "+1999"))
    # Then the live member is found both ways and nothing else
    assert (member_id, member_id) == (by_email.id, by_phone.id)
    assert (list(deleted), missing) == ([], (None, None))


# (status in the ledger, status a provider reports, whether the row moves)
FORWARD_ONLY = [
    (S.SENT, S.DELIVERED, True),
    (S.UNKNOWN, S.DELIVERED, True),
    (S.SENT, S.FAILED, True),
    (S.UNKNOWN, S.BOUNCED, True),
    (S.UNKNOWN, S.SENT, True),
    (S.DELIVERED, S.SENT, False),
    (S.DELIVERED, S.FAILED, False),
    (S.DELIVERED, S.BOUNCED, False),
    (S.BOUNCED, S.DELIVERED, False),
    (S.SENT, S.SENT, False),
    (S.SENDING, S.DELIVERED, True),  # reported before the worker recorded it
    (S.SENDING, S.FAILED, True),
    (S.PENDING, S.DELIVERED, False),
    (S.DEFERRED, S.FAILED, False),
    (S.SUPPRESSED, S.DELIVERED, False),
]


def test_provider_status_moves_deliveries_forward_only(sessions):
    """delivered/failed/bounced replace sending, sent or unknown; nothing goes backwards."""
    # Given one delivery per case, in the case's starting status
    with sessions.begin() as s:
        member_id = add_member(s).id
        ids = [add_delivery(s, member_id, old).id for old, _, _ in FORWARD_ONLY]
    # When each gets its provider report
    with sessions.begin() as s:
        moved = [
            apply_provider_status(s, delivery_id=i, status=new, reason="provider:x")
            for i, (_, new, _) in zip(ids, FORWARD_ONLY, strict=True)
        ]
    # Then exactly the forward moves happened
    with sessions() as s:
        final = [s.get(Delivery, i).status for i in ids]
    assert [case[2] for case in FORWARD_ONLY] == moved
    assert [new if ok else old for old, new, ok in FORWARD_ONLY] == final


def test_provider_status_matches_by_provider_message_id(sessions):
    """A provider id finds its delivery; the reason is set, cut to the column's length."""
    # Given a sent delivery with a provider message id
    with sessions.begin() as s:
        d = add_delivery(s, add_member(s).id, provider_message_id="SM123")
    # When the provider reports a failure for that id, and for an unknown id
    with sessions.begin() as s:
        hit = apply_provider_status(
            s, provider_message_id="SM123", status=S.FAILED, reason="provider:" + "9" * 100
        )
        miss = apply_provider_status(s, provider_message_id="SM999", status=S.FAILED)
    # Then only the known one moved
    with sessions() as s:
        row = s.get(Delivery, d.id)
    assert (hit, miss) == (True, False)
    assert (row.status, len(row.reason)) == (S.FAILED, 64)


def test_a_row_still_sending_is_found_by_delivery_id_not_by_a_provider_id(sessions):
    """Before the worker records the provider's id, only our own id can find the row.

    With both ids, a row whose provider id is recorded must carry that one
    (a report on an earlier attempt's message leaves a resent row alone).
    """
    # Given a row still sending (no provider id yet), and one sent as SM2
    with sessions.begin() as s:
        member_id = add_member(s).id
        sending = add_delivery(s, member_id, S.SENDING).id
        other = add_delivery(s, member_id, S.SENT, provider_message_id="SM2").id
    # When reports arrive by provider id alone, then by both ids
    with sessions.begin() as s:
        by_sid = apply_provider_status(s, provider_message_id="SM1", status=S.FAILED)
        by_both = apply_provider_status(
            s, delivery_id=sending, provider_message_id="SM1", status=S.FAILED, reason="p:1"
        )
        wrong_sid = apply_provider_status(
            s, delivery_id=other, provider_message_id="SM1", status=S.FAILED
        )
    # Then only the report naming the sending row by id moved it
    with sessions() as s:
        rows = [(s.get(Delivery, i).status, s.get(Delivery, i).reason) for i in (sending, other)]
    assert (by_sid, by_both, wrong_sid) == (False, True, False)
    assert rows == [(S.FAILED, "p:1"), (S.SENT, None)]


def test_provider_status_needs_an_id_and_a_provider_status():
    """Without any id, or with a status providers never report, it refuses."""
    with pytest.raises(ValueError, match="delivery_id"):
        apply_provider_status(None, status=S.DELIVERED)
    with pytest.raises(ValueError, match="cannot report"):
        apply_provider_status(None, delivery_id=1, status=S.PENDING)


def test_provider_events_are_recorded_once(sessions):
    """The same (provider, event id) is new once; another provider's same id is new too."""
    # When events are recorded, some twice
    with sessions.begin() as s:
        seen = [
            record_event_once(s, "sendgrid", "ev-1"),
            record_event_once(s, "sendgrid", "ev-1"),
            record_event_once(s, "twilio", "ev-1"),
            record_event_once(s, "sendgrid", "x" * 300),
            record_event_once(s, "sendgrid", "x" * 300),
        ]
    # Then only first sightings are new, and over-long ids are stored hashed
    with sessions() as s:
        count = s.scalar(select(func.count()).select_from(ProviderEvent))
    assert seen == [True, False, True, True, False]
    assert count == 3


def test_unsubscribe_tokens_round_trip():
    """A token names its member and channel; the URL puts it under /unsubscribe/."""
    token = make_token(KEY, 42, "email")
    assert read_token(KEY, token) == (42, "email")
    assert f"https://x.example/unsubscribe/{token}" == unsubscribe_url(
        "https://x.example/", KEY, 42, "email"
    )
    assert len(token) < 80


def test_tampered_or_foreign_tokens_are_refused():
    """Changing any character, another key or garbage raises BadToken."""
    # Given a valid token
    token = make_token(KEY, 42, "sms")
    flip = {c: ("B" if c == "A" else "A") for c in token}
    tampered = [token[:i] + flip[token[i]] + token[i + 1 :] for i in range(len(token) - 1)]
    garbage = ["", "abc", "!!!!", token + "A" * 90, token[:-4], "ä" * 10]
    # When each variant is read, Then it is refused
    for bad in [*tampered, *garbage, make_token(b"other key", 42, "sms")]:
        with pytest.raises(BadToken):
            read_token(KEY, bad)


def test_tokens_of_an_unknown_version_are_refused():
    """A correctly signed payload with another version byte is refused."""
    payload = struct.pack(">BQ", 2, 42) + b"sms"
    tag = hmac.new(KEY, b"loyalcast/unsubscribe\0" + payload, hashlib.sha256).digest()
    token = base64.urlsafe_b64encode(payload + tag).rstrip(b"=").decode()
    with pytest.raises(BadToken):
        read_token(KEY, token)


@pytest.mark.parametrize(("member_id", "channel"), [(0, "email"), (1, "E-MAIL"), (1, "")])
def test_make_token_refuses_what_it_cannot_encode(member_id, channel):
    """Ids must be positive and channel names lowercase words."""
    with pytest.raises(ValueError, match=r"member id|channel"):
        make_token(KEY, member_id, channel)
