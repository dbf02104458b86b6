"""Realistic members: names, tiers, balances, time zones, consents, devices, point lots.

Used by ``loyalcast demo``, by the simulated-month test and by the benchmarks
(``bench/``), so all three run on the same kind of program.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import phonenumbers
from sqlalchemy import Engine, func, insert, select, text

from store import Consent, ConsentEvent, Member, PointLot, PushToken, utcnow

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
    engine: Engine,
    count: int,
    *,
    seed: int = 7,
    now: datetime | None = None,
    lots: tuple[int, int] = (3, 5),
    progress: Callable[[int], None] | None = None,
) -> range:
    """Insert ``count`` members with consents, push tokens and point lots; return their ids.

    The spreads are a real program's: tiers (45% basic ... 7% platinum),
    log-normal balances, ten time zones and locales around the world, about
    10% without a phone and 5% without an email, consents per channel with
    some opt-outs, 40% with an app (push token), and ``lots`` (inclusive
    range) point lots each, earned over the last year and expiring a year
    after, so their deadlines spread over the next year. Deterministic for a
    ``seed``. Ids follow the members already stored.

    On PostgreSQL rows go in with ``COPY`` (a million members in minutes, not
    hours); elsewhere with multi-row INSERTs.
    """
    rng = random.Random(seed)
    now = now or utcnow()
    with engine.connect() as conn:
        first = int(conn.scalar(select(func.coalesce(func.max(Member.id), 0))) or 0) + 1
    copy = engine.dialect.name == "postgresql"
    for start in range(first, first + count, CHUNK):
        rows: dict[str, list[dict[str, Any]]] = {t: [] for t in _TABLES}
        for i in range(start, min(start + CHUNK, first + count)):
            _add_member(rows, rng, i, now, lots)
        if copy:
            _copy(engine, rows)
        else:
            with engine.begin() as conn:
                for table, table_rows in rows.items():
                    if table_rows:
                        conn.execute(insert(_TABLES[table]), table_rows)
        if progress:
            progress(min(start + CHUNK, first + count) - first)
    if copy:  # explicit ids leave the sequence behind
        with engine.begin() as conn:
            conn.execute(
                text(
                    "SELECT setval(pg_get_serial_sequence('members', 'id'), "
                    "(SELECT max(id) FROM members))"
                )
            )
    return range(first, first + count)


_TABLES: dict[str, Any] = {
    "members": Member,
    "consents": Consent,
    "consent_events": ConsentEvent,
    "push_tokens": PushToken,
    "point_lots": PointLot,
}


def _add_member(
    rows: dict[str, list[dict[str, Any]]],
    rng: random.Random,
    i: int,
    now: datetime,
    lots: tuple[int, int],
) -> None:
    member = _member(rng, i, now)
    rows["members"].append(member)
    for channel, p_in, p_out in (
        ("email", 0.8, 0.05),
        ("sms", 0.55, 0.08),
        ("push", 0.6, 0.02),
    ):
        roll = rng.random()
        status = "opted_in" if roll < p_in else "opted_out" if roll < p_in + p_out else None
        if status:
            common = {"member_id": i, "channel": channel, "status": status, "source": "signup"}
            rows["consents"].append({**common, "updated_at": member["enrolled_at"]})
            rows["consent_events"].append({**common, "occurred_at": member["enrolled_at"]})
    if rng.random() < 0.4:
        rows["push_tokens"].append(
            {
                "member_id": i,
                "kind": "fcm",
                "created_at": now,
                "token": f"fcm-demo-{i}-{rng.getrandbits(64):016x}",
            }
        )
    for _ in range(rng.randint(*lots)):
        earned = now - timedelta(days=rng.randint(0, 364), minutes=rng.randint(0, 1439))
        rows["point_lots"].append(
            {
                "member_id": i,
                "points": rng.randint(20, 400),
                "redeemed": 0,
                "earned_at": earned,
                "expires_at": earned + timedelta(days=365),
            }
        )


def _copy(engine: Engine, rows: dict[str, list[dict[str, Any]]]) -> None:
    """Write one chunk with PostgreSQL's COPY (text format), in one transaction."""
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cursor:  # type: ignore[attr-defined]
            for table, table_rows in rows.items():
                if not table_rows:
                    continue
                columns = list(table_rows[0])
                lines = "".join(
                    "\t".join(_copy_text(row[c]) for c in columns) + "\n" for row in table_rows
                )
                with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    copy.write(lines.encode())
        raw.commit()
    except BaseException:
        raw.rollback()
        raise
    finally:
        raw.close()


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: Any) -> str:
    """One value in COPY's text format."""
    if value is None:
        return "\\N"
    if isinstance(value, dict):
        value = json.dumps(value)
    elif isinstance(value, datetime):
        return value.isoformat()
    return str(value).translate(_ESCAPES)
