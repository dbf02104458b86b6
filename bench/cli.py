"""``python -m bench``: run scenarios on a fresh seeded database and write their figures.

    python -m bench all --members 1000000
    python -m bench segments expiry --members 100000 --repeat 5
    python -m bench broadcast --members 20000 --channels email,sms --keep
    python -m bench caps --members 20000
    python -m bench deliver --members 50000 --channels email,sms --deliver-rows 20000
    python -m bench plot bench/results/run-20260101T120000Z.json
    python -m bench table bench/results/run-20260101T120000Z.json

Every invocation prints one table per scenario and writes all of them, with
the machine and the parameters, to ``--json`` (default
``bench/results/run-<UTC time>.json``). ``plot`` draws the throughput-over-
time series of a results file into a PNG (needs the ``bench`` extra:
``pip install -e '.[bench]'``); ``table`` prints its figures as Markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from .environment import BENCH_DIR, BenchEnv, BenchOptions
from .report import ScenarioResult, markdown, print_result, write_json
from .scenarios import broadcast, capped, deliver_job, expiry_scan, raw, segment_eval, tick

__all__ = ["SCENARIOS", "main"]

Scenario = Callable[[BenchEnv, "argparse.Namespace"], ScenarioResult]

#: name -> (issue item, runner). ``all`` runs them in this order: the tick comes last,
#: so the campaigns it adds cannot be picked up by the broadcasts' workers.
SCENARIOS: dict[str, tuple[str, Scenario]] = {
    "segments": ("a", lambda env, args: segment_eval.run(env)),
    "expiry": ("b", lambda env, args: expiry_scan.run(env)),
    "broadcast": ("c", lambda env, args: broadcast.run(env, args.channels)),
    "caps": ("d", lambda env, args: capped.run(env, args.channels)),
    "deliver": (
        "c, per row",
        lambda env, args: deliver_job.run(env, args.channels, args.deliver_rows),
    ),
    "tick": ("e", lambda env, args: tick.run(env)),
    "raw": ("ii", lambda env, args: raw.run(env, args.channels)),
}
ALL = ("segments", "expiry", "broadcast", "caps", "deliver", "tick")
DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _channels(raw_value: str) -> list[str]:
    kinds = [k.strip() for k in raw_value.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in broadcast.KINDS]
    if unknown or not kinds:
        known = ", ".join(broadcast.KINDS)
        raise argparse.ArgumentTypeError(f"unknown campaign kind {unknown}; choose from {known}")
    return kinds


def _positive(raw_value: str) -> int:
    value = int(raw_value)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive whole number")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="loyalcast's benchmarks (issue 6); see bench/README.md.",
    )
    p.add_argument(
        "scenarios",
        nargs="+",
        metavar="SCENARIO",
        help=f"all, or any of: {', '.join(SCENARIOS)}; or plot/table RESULTS.json",
    )
    p.add_argument("--members", type=_positive, default=1_000_000, help="members to seed")
    p.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help="PostgreSQL server; a fresh database is created on it and dropped after",
    )
    p.add_argument(
        "--redis-url", default=DEFAULT_REDIS_URL, help="Redis (keys get a private prefix)"
    )
    p.add_argument("--json", type=Path, help="results file (default bench/results/run-<time>.json)")
    p.add_argument("--keep", action="store_true", help="keep the database (its URL is printed)")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="--database-url is a database seeded by an earlier --keep run: no seeding, no drop",
    )
    p.add_argument("--processes", type=_positive, default=2, help="worker processes (ours, naive)")
    p.add_argument("--threads", type=_positive, default=4, help="threads per worker process")
    p.add_argument("--batch-size", type=_positive, default=1000, help="LOYALCAST_BATCH_SIZE")
    p.add_argument(
        "--validate-every",
        type=_positive,
        default=100,
        help="the fakes check 1 request in this many against the providers' specs",
    )
    p.add_argument(
        "--baseline-limit",
        type=int,
        default=20_000,
        help="members the baselines send to (0: no baselines)",
    )
    p.add_argument(
        "--repeat",
        type=_positive,
        default=3,
        help="timed repetitions of reads; rounds of caps; passes of deliver",
    )
    p.add_argument(
        "--deliver-rows",
        type=_positive,
        default=deliver_job.DEFAULT_ROWS,
        help="members each pass of deliver plans and delivers",
    )
    p.add_argument("--seed", type=int, default=7, help="the generator's random seed")
    p.add_argument("--timeout", type=float, default=0.0, help="seconds a run may take (0: auto)")
    p.add_argument(
        "--channels",
        type=_channels,
        default=list(broadcast.KINDS),
        help="broadcast kinds: email,sms,mixed",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    console = Console()
    if not console.is_terminal:  # a log file: wide enough for the tables
        console = Console(width=160)
    if args.scenarios[0] == "table":
        import json

        if len(args.scenarios) != 2:
            console.print("usage: python -m bench table RESULTS.json")
            return 2
        print(markdown(json.loads(Path(args.scenarios[1]).read_text(encoding="utf-8"))))
        return 0
    if args.scenarios[0] == "plot":
        from .plot import plot_file

        if len(args.scenarios) != 2:
            console.print("usage: python -m bench plot RESULTS.json")
            return 2
        out = plot_file(Path(args.scenarios[1]))
        console.print(f"wrote {out}")
        return 0
    names = list(ALL) if args.scenarios == ["all"] else args.scenarios
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        console.print(f"[red]unknown scenario {unknown}; choose all or {', '.join(SCENARIOS)}[/]")
        return 2
    options = BenchOptions(
        members=args.members,
        database_url=args.database_url,
        redis_url=args.redis_url,
        keep=args.keep,
        reuse=args.reuse,
        processes=args.processes,
        threads=args.threads,
        batch_size=args.batch_size,
        validate_every=args.validate_every,
        baseline_limit=args.baseline_limit,
        repeat=args.repeat,
        seed=args.seed,
        timeout=args.timeout,
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.json or BENCH_DIR / "results" / f"run-{stamp}.json"
    results: list[ScenarioResult] = []
    with BenchEnv(options, console) as env:
        machine = env.machine()
        if machine["postgresql_autovacuum"] != "on":
            console.print(
                "note: autovacuum is off on this PostgreSQL server: tables are vacuumed and"
                " analyzed only where the bench does it (after seeding, between caps runs)"
            )
        parameters = {
            **dataclasses.asdict(options),
            "scenarios": names,
            "channels": args.channels,
            "started": stamp,
            "seed_seconds": env.seed_seconds,
            "members_stored": env.members,
            "database": env.database_name,
            "work_dir": str(env.work_dir),
        }
        try:
            for name in names:
                item, runner = SCENARIOS[name]
                console.rule(f"{name} (issue 6, {item})")
                result = runner(env, args)
                print_result(console, result)
                results.append(result)
        finally:
            write_json(out, machine=machine, parameters=parameters, results=results)
            console.print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
