"""Frequency caps hold across 8 concurrent workers and overlapping campaigns.

Checked against the ledger and against what the SendGrid fake accepted, per
recipient: no member ever gets more than the cap, and every message not sent
has its reason.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from channels.fakes.sendgrid import DEFAULT_API_KEY, FakeSendGrid
from store import CampaignRun, Consent, Delivery, Member, RunStatus, make_engine, make_sessionmaker

from .support import create, write_campaign

pytestmark = [pytest.mark.usefixtures("provider_specs"), pytest.mark.slow, pytest.mark.redis]

MEMBERS = 300
CAMPAIGNS = 5
LIMIT = 2
POLICY = f"""\
quiet_hours: {{sms: null}}
caps:
  - {{name: marketing-weekly, scope: all, window: 7d, limit: {LIMIT}, categories: [marketing]}}
"""


def _seed(database_url: str) -> None:
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            insert(Member),
            [
                {
                    "external_id": f"C{i:04d}",
                    "name": f"Member {i}",
                    "email": f"c{i}@example.com",
                    "locale": "en_US",
                    "tier": "gold",
                    "points_balance": 600,
                    "attributes": {},
                }
                for i in range(MEMBERS)
            ],
        )
        ids = list(conn.scalars(select(Member.id)))
        conn.execute(
            insert(Consent),
            [
                {"member_id": i, "channel": "email", "status": "opted_in", "source": "test"}
                for i in ids
            ],
        )
    engine.dispose()


def test_eight_workers_and_overlapping_campaigns_never_exceed_the_cap(
    database_url: str, env: dict[str, str], procs: Any, tmp_path: Path
) -> None:
    """Five campaigns at once to 300 members, 2 per week allowed: exactly 2 each, 3 capped each."""
    # Given 300 members, a cap of 2 marketing messages per 7 days, and 5 campaigns due at once
    _seed(database_url)
    policy = tmp_path / "caps.yaml"
    policy.write_text(POLICY)
    sessions = make_sessionmaker(make_engine(database_url))
    runs = [
        create(sessions, write_campaign(tmp_path, name=f"overlap-{i}", channels="[email]")).run_id
        for i in range(CAMPAIGNS)
    ]
    with FakeSendGrid() as sendgrid:
        live = {
            **env,
            "LOYALCAST_POLICY_FILE": str(policy),
            "LOYALCAST_PUBLIC_URL": "https://loyalty.example",
            "LOYALCAST_BATCH_SIZE": "50",
            "SENDGRID_API_KEY": DEFAULT_API_KEY,
            "SENDGRID_FROM_EMAIL": "rewards@loyalty.example",
            "SENDGRID_API_HOST": sendgrid.url,
            "LOYALCAST_SENDGRID_RATE": "5000",
        }
        # When a scheduler and 8 concurrent worker threads (2 processes x 4) run them all
        procs("scheduler", live)
        procs("workers", live, processes=2, threads=4)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with sessions() as s:
                statuses = set(
                    s.scalars(select(CampaignRun.status).where(CampaignRun.id.in_(runs)))
                )
            if statuses == {RunStatus.COMPLETED}:
                break
            time.sleep(0.3)
        assert statuses == {RunStatus.COMPLETED}
        # Then the ledger holds exactly 2 sent and 3 capped messages per member
        with sessions() as s:
            rows = s.execute(select(Delivery.member_id, Delivery.status, Delivery.reason)).all()
        per_member = Counter(m for m, status, _ in rows if status == "sent")
        assert set(per_member.values()) == {LIMIT}
        assert len(per_member) == MEMBERS
        not_sent = [(status, reason) for _, status, reason in rows if status != "sent"]
        assert Counter(not_sent) == {("suppressed", "frequency_cap"): MEMBERS * (CAMPAIGNS - LIMIT)}
        # And SendGrid accepted at most 2 messages per recipient, matching the ledger
        per_recipient = Counter(mail.to for mail in sendgrid.mails)
        assert max(per_recipient.values()) == LIMIT
        assert sum(per_recipient.values()) == MEMBERS * LIMIT
        assert sendgrid.invalid == []
