"""A broadcast through all four live channels, with real worker processes and provider fakes.

Members are reachable and consented in mixed ways. Each must get exactly one
message, on the first channel of ``[push, email, sms, direct_mail]`` that is
consented and reachable; every provider request must pass the provider's
official OpenAPI spec; and each fake's count must equal the ledger's ``sent``
rows on that channel.
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from channels.fakes.fcm import FakeFcm
from channels.fakes.sendgrid import DEFAULT_API_KEY, FakeSendGrid
from channels.fakes.twilio import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeTwilio
from store import (
    CampaignRun,
    Consent,
    Delivery,
    Member,
    PushToken,
    RunStatus,
    make_engine,
    make_sessionmaker,
)

from .support import create, write_campaign

pytestmark = [pytest.mark.usefixtures("provider_specs"), pytest.mark.slow, pytest.mark.redis]

MEMBERS = 2400
#: profile -> (consents, has push token, has phone, has address, expected channel or None)
PROFILES: list[tuple[str, dict[str, str], bool, bool, bool, str | None]] = [
    ("push", {"push": "opted_in", "email": "opted_in"}, True, True, True, "push"),
    ("push-opted-out", {"push": "opted_out", "email": "opted_in"}, True, True, False, "email"),
    ("email", {"email": "opted_in", "sms": "opted_in"}, False, True, False, "email"),
    ("sms", {"sms": "opted_in", "email": "opted_out"}, False, True, False, "sms"),
    (
        "sms-no-phone",
        {"sms": "opted_in", "direct_mail": "opted_in"},
        False,
        False,
        True,
        "direct_mail",
    ),
    ("mail", {"direct_mail": "opted_in"}, False, True, True, "direct_mail"),
    ("nothing", {"email": "opted_out", "sms": "opted_out"}, True, True, True, None),
    ("no-consent", {}, True, True, True, None),
]


def _seed(database_url: str) -> dict[int, str | None]:
    """Members of every profile in turn; returns member id -> expected channel."""
    engine = make_engine(database_url)
    expected: dict[int, str | None] = {}
    with engine.begin() as conn:
        rows = []
        for i in range(MEMBERS):
            name, _consents, _token, phone, address, _channel = PROFILES[i % len(PROFILES)]
            rows.append(
                {
                    "external_id": f"L{i:05d}",
                    "name": f"Member {i}",
                    "email": None if name == "sms-no-phone" else f"m{i}@example.com",
                    "phone": f"+1415555{i:04d}" if phone else None,
                    "locale": "en_US",
                    "time_zone": "America/New_York",
                    "tier": "gold",
                    "points_balance": 800,
                    "attributes": {},
                    "address_line1": f"{i} Main Street" if address else None,
                    "address_city": "Springfield" if address else None,
                    "address_state": "IL" if address else None,
                    "address_zip": "62701" if address else None,
                    "address_country": "US" if address else None,
                }
            )
        conn.execute(insert(Member), rows)
        ids = list(conn.scalars(select(Member.id).order_by(Member.id)))
        consents, tokens = [], []
        for i, member_id in enumerate(ids):
            _name, member_consents, token, _phone, _address, channel = PROFILES[i % len(PROFILES)]
            expected[member_id] = channel
            consents += [
                {"member_id": member_id, "channel": c, "status": s, "source": "test"}
                for c, s in member_consents.items()
            ]
            if token:
                tokens.append({"member_id": member_id, "kind": "fcm", "token": f"fcm-{member_id}"})
        conn.execute(insert(Consent), consents)
        conn.execute(insert(PushToken), tokens)
    engine.dispose()
    return expected


def _wait_completed(database_url: str, run_id: int, timeout: float) -> None:
    engine = make_engine(database_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                status = conn.scalar(select(CampaignRun.status).where(CampaignRun.id == run_id))
            if status == RunStatus.COMPLETED:
                return
            time.sleep(0.2)
    finally:
        engine.dispose()
    raise AssertionError(f"run {run_id} did not complete in {timeout} s")


def _csv_rows(folder: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as fh:
            rows.extend(csv.DictReader(fh))
    return rows


def test_a_broadcast_reaches_each_member_once_on_the_first_consented_reachable_channel(
    database_url: str, env: dict[str, str], procs: Any, tmp_path: Path
) -> None:
    """Four live channels, real workers: one message per member, counts reconciled, specs kept."""
    # Given 2,400 members of eight reachability/consent profiles and live providers
    expected = _seed(database_url)
    created = create(
        make_sessionmaker(make_engine(database_url)),
        write_campaign(
            tmp_path,
            channels="[push, email, sms, direct_mail]",
            segment="{all: [{field: tier, op: '=', value: gold}]}",
        ),
    )
    assert created.run_id is not None
    drop = tmp_path / "drop"
    with FakeTwilio() as twilio, FakeSendGrid() as sendgrid, FakeFcm() as fcm:
        credentials = fcm.write_service_account(tmp_path / "fcm.json", "loyalty-e2e")
        live = {
            **env,
            "LOYALCAST_DATABASE_URL": database_url,
            "LOYALCAST_PUBLIC_URL": "https://loyalty.example",
            "TWILIO_ACCOUNT_SID": DEFAULT_ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": DEFAULT_AUTH_TOKEN,
            "TWILIO_FROM_NUMBER": "+15005550006",
            "LOYALCAST_TWILIO_BASE_URL": twilio.url,
            "LOYALCAST_TWILIO_RATE": "2000",
            "SENDGRID_API_KEY": DEFAULT_API_KEY,
            "SENDGRID_FROM_EMAIL": "rewards@loyalty.example",
            "SENDGRID_API_HOST": sendgrid.url,
            "GOOGLE_APPLICATION_CREDENTIALS": str(credentials),
            "FCM_PROJECT_ID": "loyalty-e2e",
            "LOYALCAST_FCM_BASE_URL": fcm.url,
            "LOYALCAST_DIRECT_MAIL_DIR": str(drop),
            "LOYALCAST_LEASE_SECONDS": "60",
        }
        # When the scheduler and two worker processes run the broadcast
        procs("scheduler", live)
        procs("workers", live)
        _wait_completed(database_url, created.run_id, timeout=180)

        # Then every provider request passed its official spec
        assert twilio.invalid == []
        assert sendgrid.invalid == []
        assert fcm.invalid == []
        engine = make_engine(database_url)
        with engine.connect() as conn:
            rows = conn.execute(
                select(Delivery.member_id, Delivery.channel, Delivery.status, Delivery.reason)
            ).all()
        engine.dispose()
        # And each member has exactly one delivery, sent on the expected channel or suppressed
        assert len(rows) == MEMBERS
        assert len({r.member_id for r in rows}) == MEMBERS
        for row in rows:
            want = expected[row.member_id]
            if want is None:
                assert (row.status, row.reason) in {("suppressed", "consent")}, row
            else:
                assert (row.status, row.channel) == ("sent", want), row
        sent = Counter(r.channel for r in rows if r.status == "sent")
        # And each fake accepted exactly the ledger's sent rows, once per recipient
        assert len(fcm.messages) == sent["push"]
        assert len(sendgrid.mails) == sent["email"]
        assert len(twilio.messages) == sent["sms"]
        mail_rows = _csv_rows(drop)
        assert len(mail_rows) == sent["direct_mail"]
        assert len({m.message["token"] for m in fcm.messages}) == len(fcm.messages)
        assert len({m.to for m in sendgrid.mails}) == len(sendgrid.mails)
        assert len({m["to"] for m in twilio.messages}) == len(twilio.messages)
        assert len({r["delivery_id"] for r in mail_rows}) == len(mail_rows)
        assert min(sent.values()) > 0
        # And marketing email carried a one-click unsubscribe link to our api
        assert all(
            m.headers.get("List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
            for m in sendgrid.mails
        )
