"""Scenario a: segment evaluation, the count and the full id stream, for five rules.

The rules are the kinds a loyalty marketer writes (see :data:`RULES`): plain
columns, consent and reachability (subqueries on other tables), points
expiring soon (an aggregate over point lots), and a mix with ``any``/``not``
and a ``received`` history check. Each is compiled by :mod:`segments`
as a read of the whole audience is (:func:`segments.audience_filter` with
``whole_audience=True``, as ``preview`` counts and ``snapshot`` stores), then

- counted, as ``preview`` and ``segments preview`` count it;
- streamed: every matching id in id order through a server-side cursor
  (``yield_per``), the way a consumer of the whole audience reads it.

Each is timed ``--repeat`` times after one untimed warm-up (the first run
reads pages from disk into PostgreSQL's cache); the median and the fastest
are reported. The count and the number of streamed ids must agree.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, select

from segments import audience_filter, parse_rule
from store import Member

from ..environment import BenchEnv
from ..report import ScenarioResult, median

__all__ = ["RULES", "run"]

#: name -> rule, in the campaign-file language.
RULES: dict[str, dict[str, Any]] = {
    "tier+balance": {
        "all": [
            {"field": "tier", "op": "in", "value": ["gold", "platinum"]},
            {"field": "points_balance", "op": ">=", "value": 500},
        ]
    },
    "email-marketable": {"all": [{"consented": "email"}, {"reachable": "email"}]},
    "expiring-30d>=100": {"points_expiring": {"within": "30d"}, "op": ">=", "value": 100},
    "lapsed-regulars": {
        "all": [
            {"field": "purchases_count", "op": ">=", "value": 10},
            {"field": "last_purchase_at", "op": "older_than", "value": "60d"},
            {"field": "address_country", "op": "in", "value": ["US", "GB", "DE"]},
        ]
    },
    "push-or-sms-not-received": {
        "all": [
            {"any": [{"reachable": "push"}, {"all": [{"consented": "sms"}, {"reachable": "sms"}]}]},
            {"not": {"received": "winter-double-points", "within_last": "30d"}},
        ]
    },
}

STREAM_BATCH = 10_000


def _count(env: BenchEnv, where: Any) -> tuple[float, int]:
    with env.sessions() as session:
        started = time.perf_counter()
        ids = select(Member.id).where(where)
        count = int(session.scalar(select(func.count()).select_from(ids.subquery())) or 0)
        return time.perf_counter() - started, count


def _stream(env: BenchEnv, where: Any) -> tuple[float, int]:
    with env.sessions() as session:
        started = time.perf_counter()
        result = session.execute(
            select(Member.id).where(where).order_by(Member.id),
            execution_options={"yield_per": STREAM_BATCH},
        )
        n = 0
        for _ in result.scalars():
            n += 1
        return time.perf_counter() - started, n


def run(env: BenchEnv) -> ScenarioResult:
    """Time count and stream of each rule in :data:`RULES`."""
    result = ScenarioResult("segments", f"segment evaluation over {env.members:,} members")
    repeat = env.options.repeat
    for name, raw in RULES.items():
        where = audience_filter(parse_rule(raw, "segment"), whole_audience=True)
        _count(env, where)  # warm-up
        counts = [_count(env, where) for _ in range(repeat)]
        streams = [_stream(env, where) for _ in range(repeat)]
        count = counts[0][1]
        streamed = streams[0][1]
        if {c for _, c in counts} != {count} or {s for _, s in streams} != {count}:
            raise AssertionError(
                f"rule {name}: counts {[c for _, c in counts]} and streamed ids"
                f" {[s for _, s in streams]} disagree"
            )
        count_s = median(t for t, _ in counts)
        stream_s = median(t for t, _ in streams)
        row = result.row(name)
        row.add("members", count, "count")
        row.add("count median", count_s * 1000, "ms")
        row.add("count best", min(t for t, _ in counts) * 1000, "ms")
        row.add("stream median", stream_s * 1000, "ms")
        row.add("stream ids/s", streamed / stream_s if stream_s else 0.0, "ids/s")
    result.notes.append(
        f"median and best of {repeat} runs after one warm-up; stream = every id through a"
        f" server-side cursor, {STREAM_BATCH:,} rows per fetch; target: count < 1 s at 1M"
    )
    return result
