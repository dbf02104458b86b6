"""Scenario c: end-to-end broadcasts to every member, against both baselines, side by side.

Three campaigns, each a marketing broadcast to every member with the built-in
``winter-double-points`` template: ``email`` (SendGrid fake), ``sms`` (Twilio
fake) and ``mixed`` (``[email, sms]``: email, else SMS). For each:

1. ours (:mod:`bench.ours`): create, tick, plan, deliver with ``--processes``
   worker processes of ``--threads`` threads;
2. the naive baseline (:mod:`bench.baselines.naive`): one job per recipient,
   same processes and threads, over the first ``--baseline-limit`` members of
   the same audience;
3. the raw limit (:mod:`bench.baselines.raw_http`): the HTTP requests of the
   messages to those same members, in a tight loop from one process.

All three use the same fakes, started once in this process. Every run is
checked before its figures are trusted: each fake accepted exactly as many
messages as the ledger (or the naive table) says were sent, no recipient got
two, and no sampled request failed its spec. Throughput is messages the fakes
accepted per second; ours is reported as a ratio to each baseline.
"""

from __future__ import annotations

from collections.abc import Sequence

from channels.fakes.sendgrid import FakeSendGrid
from channels.fakes.twilio import FakeTwilio
from loyalcast.settings import Settings
from workers import close_broker, make_broker

from ..baselines.naive import NaiveRun, measure_naive, naive_workers
from ..baselines.raw_http import RawRun, build_requests, expected_recipients, measure_raw
from ..environment import BenchEnv
from ..meters import FakeMeter, check_intake
from ..ours import OurRun, measure_broadcast, our_workers, write_campaign
from ..report import Ratio, ScenarioResult

__all__ = ["KINDS", "run", "throughput_series"]

#: label -> the campaign's channels, in preference order.
KINDS: dict[str, list[str]] = {"email": ["email"], "sms": ["sms"], "mixed": ["email", "sms"]}
#: The issue's targets: ours / naive, and ours / raw.
NAIVE_TARGET = {"email": 10.0}
RAW_TARGET = {"email": 0.5, "sms": 0.5}


def throughput_series(
    timeline: Sequence[tuple[float, int]], start: float, window: float = 1.0
) -> list[tuple[float, float]]:
    """Messages per second in consecutive ``window``-second bins from ``start``."""
    series: list[tuple[float, float]] = []
    if not timeline:
        return series
    bins: dict[int, int] = {}
    previous = 0
    for at, total in timeline:
        index = max(0, int((at - start) // window))
        bins[index] = bins.get(index, 0) + total - previous
        previous = total
    for index in range(max(bins) + 1):
        series.append(((index + 1) * window, bins.get(index, 0) / window))
    return series


def run(env: BenchEnv, kinds: Sequence[str] = tuple(KINDS)) -> ScenarioResult:
    """Run ours, the naive baseline and the raw loop for each of ``kinds``."""
    validate_every = env.options.validate_every
    sendgrid = FakeSendGrid(validate_every=validate_every)
    twilio = FakeTwilio(validate_every=validate_every)
    sendgrid.start()
    twilio.start()
    try:
        settings = env.provider_settings(twilio_url=twilio.url, sendgrid_url=sendgrid.url)
        with FakeMeter([sendgrid, twilio]) as meter:
            ours = _ours(env, settings, meter, kinds)
            naive = _naive(env, settings, meter, ours)
            raw = _raw(env, settings, meter, ours)
    finally:
        sendgrid.stop()
        twilio.stop()
    return _result(env, kinds, ours, naive, raw)


def _ours(
    env: BenchEnv, settings: Settings, meter: FakeMeter, kinds: Sequence[str]
) -> dict[str, OurRun]:
    ours: dict[str, OurRun] = {}
    broker = make_broker(settings)
    try:
        with our_workers(env, settings, "workers") as group:
            for kind in kinds:
                path = write_campaign(env, kind, KINDS[kind])
                done = measure_broadcast(env, settings, broker, group, meter, path)
                check_intake(f"ours {kind}", done.intake, done.recipients)
                env.console.print(
                    f"  ours {kind}: {done.sent:,} sent in {done.seconds:.1f} s"
                    f" ({done.throughput:,.0f}/s)"
                )
                ours[kind] = done
    finally:
        close_broker(broker)
    return ours


def _naive(
    env: BenchEnv, settings: Settings, meter: FakeMeter, ours: dict[str, OurRun]
) -> dict[str, NaiveRun]:
    naive: dict[str, NaiveRun] = {}
    if env.options.baseline_limit <= 0:
        return naive
    with naive_workers(env, settings) as group:
        for kind, done in ours.items():
            result = measure_naive(
                env,
                group,
                meter,
                version_id=done.version_id,
                channels=KINDS[kind],
                segment=None,
                limit=min(env.options.baseline_limit, done.planned),
                timeout=env.options.run_timeout,
            )
            check_intake(f"naive {kind}", result.intake, result.recipients)
            env.console.print(
                f"  naive {kind}: {result.sent:,} sent in {result.seconds:.1f} s"
                f" ({result.throughput:,.0f}/s)"
            )
            naive[kind] = result
    return naive


def _raw(
    env: BenchEnv, settings: Settings, meter: FakeMeter, ours: dict[str, OurRun]
) -> dict[str, RawRun]:
    raw: dict[str, RawRun] = {}
    if env.options.baseline_limit <= 0:
        return raw
    for kind, done in ours.items():
        members = env.audience(min(env.options.baseline_limit, done.planned))
        requests = build_requests(env, settings, done.version_id, members)
        meter.reset()
        result = measure_raw(env, requests, kind)
        if result["ok"] != len(requests) or result["errors"]:
            raise AssertionError(f"raw {kind}: {result}")
        check_intake(f"raw {kind}", meter.snapshot(), expected_recipients(requests))
        env.console.print(
            f"  raw {kind}: {result['messages']:,} messages in {result['requests']:,}"
            f" requests, {result['seconds']:.1f} s"
            f" ({result.throughput:,.0f}/s)"
        )
        raw[kind] = result
    return raw


def _result(
    env: BenchEnv,
    kinds: Sequence[str],
    ours: dict[str, OurRun],
    naive: dict[str, NaiveRun],
    raw: dict[str, RawRun],
) -> ScenarioResult:
    o = env.options
    result = ScenarioResult(
        "broadcast", f"end-to-end broadcasts to {env.members:,} members, against the baselines"
    )
    for kind in kinds:
        done = ours[kind]
        row = result.row(f"ours {kind}")
        row.add("recipients", done.planned, "count")
        row.add("sent", done.sent, "count")
        row.add("suppressed", done.count("suppressed"), "count")
        row.add("seconds", done.seconds, "s")
        row.add("msgs/s", done.throughput, "msg/s")
        row.add("plan", done.plan_seconds, "s")
        row.add("first send", done.first_send_seconds, "s")
        row.add("worker peak RSS", done.peak_process_mib, "MiB")
        row.add("workers total RSS", done.peak_total_mib, "MiB")
        row.add("worker CPU/1k msgs", 1000 * done.cpu_seconds / max(done.sent, 1), "s")
        if done.db_cpu_seconds is not None:
            row.add("database CPU/1k msgs", 1000 * done.db_cpu_seconds / max(done.sent, 1), "s")
        result.series[f"ours {kind}"] = throughput_series(done.intake.timeline, done.started_at)
        if kind in naive:
            n = naive[kind]
            row = result.row(f"naive {kind}")
            row.add("recipients", n.members, "count")
            row.add("sent", n.sent, "count")
            row.add("suppressed", n.statuses.get("suppressed", 0), "count")
            row.add("seconds", n.seconds, "s")
            row.add("msgs/s", n.throughput, "msg/s")
            row.add("worker peak RSS", n.peak_process_mib, "MiB")
            row.add("workers total RSS", n.peak_total_mib, "MiB")
            row.add("worker CPU/1k msgs", 1000 * n.cpu_seconds / max(n.sent, 1), "s")
            if n.db_cpu_seconds is not None:
                row.add("database CPU/1k msgs", 1000 * n.db_cpu_seconds / max(n.sent, 1), "s")
            result.ratios.append(
                Ratio(
                    f"{kind} ours/naive",
                    done.throughput,
                    "naive",
                    n.throughput,
                    NAIVE_TARGET.get(kind),
                )
            )
        if kind in raw:
            r = raw[kind]
            row = result.row(f"raw {kind}")
            row.add("requests", r["requests"], "count")
            row.add("sent", r["messages"], "count")
            row.add("seconds", r["seconds"], "s")
            row.add("msgs/s", r.throughput, "msg/s")
            result.ratios.append(
                Ratio(
                    f"{kind} ours/raw",
                    done.throughput,
                    "raw HTTP",
                    r.throughput,
                    RAW_TARGET.get(kind),
                )
            )
    result.notes += [
        f"the fakes validate 1 request in {o.validate_every} against the providers' OpenAPI"
        " specs (sampled during benchmarks); none failed",
        "LOYALCAST_TWILIO_RATE and LOYALCAST_SENDGRID_RATE are raised to 1,000,000/s so the"
        " token bucket is not what is measured; no quiet hours, no caps",
        f"ours and naive: {o.processes} worker processes x {o.threads} threads; the fakes"
        " run in the bench process (werkzeug, one thread per request)",
        f"both baselines over the first {o.baseline_limit:,} members of the audience (the"
        " per-recipient cost of neither grows with N)",
        "the email template greets each member by name: SendGrid requests carry up to 1000"
        " members each, their own text as substitutions (channels.sendgrid_body); the raw"
        " loop sends those same grouped requests",
    ]
    return result
