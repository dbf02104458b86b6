"""Realistic demo members: names, tiers, balances, time zones, consents, devices, point lots."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import phonenumbers
from sqlalchemy import Engine, insert

from store import Consent, ConsentEvent, Member, PointLot, PushToken

__all__ = ["seed_members"]

FIRST = [
    "Ada",
    "Grace",
    "Alan",
    "Maya",
    "Noor",
    "Lena",
    "Kenji",
    "Sofia",
    "Omar",
    "Chloé",
    "Mateo",
    "Ingrid",
    "Ravi",
    "Zoe",
    "Tomás",
    "Amara",
    "Felix",
    "Yuki",
    "Jonas",
    "Priya",
]
LAST = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Okafor",
    "Haddad",
    "Schmidt",
    "Tanaka",
    "Rossi",
    "Farouk",
    "Dubois",
    "García",
    "Larsen",
    "Iyer",
    "Nguyen",
    "Silva",
    "Mensah",
    "Weber",
]
#: (time zone, locale, country, calling code); phone numbers are valid mobile numbers of
#: the country, made from phonenumbers' example number.
PLACES = [
    ("America/New_York", "en_US", "US", "1"),
    ("America/Chicago", "en_US", "US", "1"),
    ("America/Los_Angeles", "en_US", "US", "1"),
    ("America/Sao_Paulo", "pt_BR", "BR", "55"),
    ("Europe/London", "en_GB", "GB", "44"),
    ("Europe/Berlin", "de_DE", "DE", "49"),
    ("Europe/Paris", "fr_FR", "FR", "33"),
    ("Asia/Tokyo", "ja_JP", "JP", "81"),
    ("Asia/Kolkata", "en_IN", "IN", "91"),
    ("Australia/Sydney", "en_AU", "AU", "61"),
]
TIERS = [("basic", 45), ("silver", 30), ("gold", 18), ("platinum", 7)]
CHUNK = 1000


@cache
def _example_mobile(region: str) -> str:
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    if example is None:
        raise ValueError(f"phonenumbers has no example mobile number for {region}")
    return phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)


def _mobile(region: str, rng: random.Random) -> str:
    """A valid mobile number of ``region``: its example number with new last four digits."""
    return _example_mobile(region)[:-4] + f"{rng.randint(0, 9999):04d}"


def _member(rng: random.Random, i: int, now: datetime) -> dict[str, Any]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    zone, locale, country, _code = rng.choice(PLACES)
    tier = rng.choices([t for t, _ in TIERS], [w for _, w in TIERS])[0]
    balance = int(rng.lognormvariate(6.0, 1.0)) * (2 if tier in ("gold", "platinum") else 1)
    handle = f"{first}.{last}{i}".lower().encode("ascii", "ignore").decode()
    return {
        "id": i,
        "external_id": f"M{i:07d}",
        "name": f"{first} {last}",
        "email": f"{handle}@example.com" if rng.random() < 0.95 else None,
        "phone": _mobile(country, rng) if rng.random() < 0.9 else None,
        "locale": locale,
        "time_zone": zone,
        "tier": tier,
        "points_balance": balance,
        "enrolled_at": now - timedelta(days=rng.randint(1, 1500)),
        "purchases_count": rng.randint(0, 40),
        "last_purchase_at": now - timedelta(days=rng.randint(0, 200)),
        "attributes": {"favourite_store": rng.choice(["downtown", "airport", "online"])},
        "address_country": country,
        "created_at": now,
        "updated_at": now,
    }


def seed_members(
    engine: Engine, count: int, *, seed: int = 7, progress: Callable[[int], None] | None = None
) -> None:
    """Insert ``count`` members with consents, push tokens and point lots."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    for start in range(1, count + 1, CHUNK):
        members, consents, events, tokens, lots = [], [], [], [], []
        for i in range(start, min(start + CHUNK, count + 1)):
            member = _member(rng, i, now)
            members.append(member)
            for channel, p_in, p_out in (
                ("email", 0.8, 0.05),
                ("sms", 0.55, 0.08),
                ("push", 0.6, 0.02),
            ):
                roll = rng.random()
                status = "opted_in" if roll < p_in else "opted_out" if roll < p_in + p_out else None
                if status:
                    consents.append(
                        {
                            "member_id": i,
                            "channel": channel,
                            "status": status,
                            "source": "signup",
                            "updated_at": member["enrolled_at"],
                        }
                    )
                    events.append(
                        {
                            "member_id": i,
                            "channel": channel,
                            "status": status,
                            "source": "signup",
                            "occurred_at": member["enrolled_at"],
                        }
                    )
            if rng.random() < 0.4:
                tokens.append(
                    {
                        "member_id": i,
                        "kind": "fcm",
                        "created_at": now,
                        "token": f"fcm-demo-{i}-{rng.getrandbits(64):016x}",
                    }
                )
            for _ in range(rng.randint(1, 4)):
                earned = now - timedelta(days=rng.randint(0, 330))
                lots.append(
                    {
                        "member_id": i,
                        "points": rng.randint(20, 400),
                        "redeemed": 0,
                        "earned_at": earned,
                        "expires_at": earned + timedelta(days=365),
                    }
                )
        with engine.begin() as conn:
            conn.execute(insert(Member), members)
            if consents:
                conn.execute(insert(Consent), consents)
                conn.execute(insert(ConsentEvent), events)
            if tokens:
                conn.execute(insert(PushToken), tokens)
            conn.execute(insert(PointLot), lots)
        if progress:
            progress(min(start + CHUNK - 1, count))
