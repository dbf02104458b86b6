"""The ``loyalcast`` command as a user runs it: real processes, real exit codes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from sqlalchemy import func, select

from segments import audience_filter, parse_rule
from store import Delivery, Member, make_engine

from .support import write_campaign

LOYALCAST = str(Path(sys.executable).parent / "loyalcast")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOYALCAST_")}
    env.update({"LOYALCAST_DATA_DIR": str(tmp_path / "data"), "LOYALCAST_LOG_LEVEL": "WARNING"})
    env.update(extra)
    return env


def _run(
    tmp_path: Path, *args: str, timeout: float = 120, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LOYALCAST, *args],
        cwd=tmp_path,
        env=_env(tmp_path, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _leftovers(marker: str) -> list[str]:
    """Processes whose command line or environment mentions ``marker``."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            environ = proc.environ() if marker not in cmdline else {}
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if marker in cmdline or any(marker in v for v in environ.values()):
            found.append(f"{proc.info['pid']}: {cmdline}")
    return found


@pytest.mark.slow
def test_demo_sends_every_eligible_member_once_and_leaves_no_process(tmp_path: Path):
    """The demo sends each eligible member one message (row and outbox line), then stops all."""
    # When the demo runs with no configuration at all
    result = _run(tmp_path, "demo", "--members", "400", timeout=300)
    # Then it succeeds and says where the outbox is
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo complete" in result.stdout
    demo = tmp_path / "data" / "demo"
    # And every member of the segment has exactly one delivery row
    engine = make_engine(f"sqlite:///{demo / 'loyalcast.db'}")
    rule = parse_rule(
        {
            "all": [
                {"field": "tier", "op": "in", "value": ["silver", "gold", "platinum"]},
                {"field": "points_balance", "op": ">=", "value": 500},
            ]
        }
    )
    with engine.connect() as conn:
        audience = set(conn.scalars(select(Member.id).where(audience_filter(rule))))
        rows = conn.execute(select(Delivery.id, Delivery.member_id, Delivery.status)).all()
        per_status = dict(
            conn.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all()
        )
    engine.dispose()
    assert sorted(m for _, m, _ in rows) == sorted(audience)
    assert set(per_status) <= {"sent", "suppressed"}
    # And the outbox holds one line per sent row, none twice
    lines = [
        json.loads(line)
        for path in (demo / "outbox").glob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert sorted(line["delivery_id"] for line in lines) == sorted(
        i for i, _, s in rows if s == "sent"
    )
    # And no redis-server or worker it started is still running
    socket = re.search(r"unix://(\S+)", result.stdout)
    assert socket is not None
    assert _leftovers(socket.group(1)) == []
    assert _leftovers(str(demo)) == []


@pytest.mark.slow
def test_demo_interrupted_stops_everything(tmp_path: Path):
    """Ctrl-C in the middle of the demo stops its workers and its private Redis."""
    proc = subprocess.Popen(
        [LOYALCAST, "demo", "--members", "20000"],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    demo = str(tmp_path / "data" / "demo")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any("workers.main" in c for c in _leftovers(demo)):
        time.sleep(0.2)
    assert any("workers.main" in c for c in _leftovers(demo)), "the demo never started its workers"
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert "interrupted" in output
    assert proc.returncode != 0
    time.sleep(0.5)
    assert _leftovers(demo) == []
    assert [p for p in _leftovers("lc-redis-") if str(proc.pid) in p] == []


def test_a_malformed_setting_stops_the_command_naming_the_variable(tmp_path: Path):
    """A bad environment variable: exit code 2 and a message naming it."""
    result = _run(tmp_path, "db", "upgrade", LOYALCAST_BATCH_SIZE="many")
    assert result.returncode == 2
    assert "LOYALCAST_BATCH_SIZE" in result.stderr


def test_worker_without_a_shared_redis_explains_itself(tmp_path: Path):
    """`loyalcast worker` with no LOYALCAST_REDIS_URL says why and what to do instead."""
    result = _run(tmp_path, "worker")
    assert result.returncode == 2
    assert "LOYALCAST_REDIS_URL is not set" in result.stderr
    assert "loyalcast run" in result.stderr


def test_campaigns_create_refuses_a_bad_file_naming_line_and_key(tmp_path: Path):
    """A typo in an operator is refused naming file, line and key; nothing is stored."""
    path = write_campaign(tmp_path, segment='{all: [{field: tier, op: "=>", value: gold}]}')
    result = _run(tmp_path, "campaigns", "create", str(path))
    assert result.returncode == 1
    assert f"{path}, line 4, segment.all[0].op: unknown operator" in " ".join(result.stderr.split())
    status = _run(tmp_path, "campaigns", "status", "test-broadcast")
    assert status.returncode == 1
    assert "no campaign named 'test-broadcast'" in status.stderr


def test_campaigns_create_then_status(tmp_path: Path):
    """A good file is created with its run, and status lists the run."""
    path = write_campaign(tmp_path)
    created = _run(tmp_path, "campaigns", "create", str(path))
    assert created.returncode == 0, created.stderr
    assert "campaign test-broadcast created (version 1); run 1 due" in created.stdout
    status = _run(tmp_path, "campaigns", "status", "test-broadcast")
    assert status.returncode == 0, status.stderr
    assert "scheduled" in status.stdout


def test_members_import_reports_bad_rows_and_writes_nothing_by_default(tmp_path: Path):
    """A bad phone on line 3 is named with its field; all-or-nothing writes nothing."""
    # Given a CSV whose second member has an impossible phone number
    path = tmp_path / "members.csv"
    path.write_text(
        "external_id,name,email,phone,consent_email\n"
        "A1,Ada Lovelace,ada@example.com,(415) 555-0100,yes\n"
        "A2,Alan Turing,alan@example.com,555-12,yes\n"
    )
    # When it is imported
    result = _run(tmp_path, "members", "import", str(path))
    # Then the error names line and field, and the database holds no member
    assert result.returncode == 1
    assert "members.csv, line 3, field phone:" in result.stderr
    assert "nothing was written" in result.stderr
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'loyalcast.db'}")
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Member)) == 0
    engine.dispose()
    # When the bad rows are skipped instead
    skipped = _run(tmp_path, "members", "import", "--skip-bad", str(path))
    # Then the good row is in, stored in E.164, and the bad one is still reported
    assert skipped.returncode == 1
    assert "1 inserted" in skipped.stdout
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'loyalcast.db'}")
    with engine.connect() as conn:
        assert conn.execute(select(Member.external_id, Member.phone)).all() == [
            ("A1", "+14155550100")
        ]
    engine.dispose()


@pytest.mark.slow
def test_run_delivers_due_campaigns_and_stops_cleanly(tmp_path: Path):
    """`loyalcast run` sends a due broadcast through its own Redis; SIGINT stops everything."""
    # Given a member import and a broadcast due now, in the embedded default
    members = tmp_path / "members.jsonl"
    members.write_text(
        "".join(
            json.dumps(
                {
                    "external_id": f"R{i}",
                    "name": f"Rae {i}",
                    "email": f"r{i}@example.com",
                    "tier": "gold",
                    "consent_email": "yes",
                }
            )
            + "\n"
            for i in range(30)
        )
    )
    assert _run(tmp_path, "members", "import", str(members)).returncode == 0
    assert _run(tmp_path, "campaigns", "create", str(write_campaign(tmp_path))).returncode == 0
    # When `loyalcast run` runs until the outbox has every message
    env = _env(tmp_path, LOYALCAST_TICK_SECONDS="0.5")
    proc = subprocess.Popen(
        [LOYALCAST, "run"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    outbox = tmp_path / "data" / "outbox" / "email.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
        outbox.exists() and len(outbox.read_text().splitlines()) >= 30
    ):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    # Then every member got one email and nothing it started is left running
    assert len(outbox.read_text().splitlines()) == 30, output
    assert "channel email: outbox" in output
    assert proc.returncode == 0, output
    assert _leftovers(str(tmp_path / "data")) == []


def test_api_serves_health_on_the_configured_port(tmp_path: Path):
    """`loyalcast api` starts uvicorn on the port asked for and answers /healthz."""
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [LOYALCAST, "api", "--port", str(port)],
        cwd=tmp_path,
        env=_env(tmp_path, LOYALCAST_PUBLIC_URL="https://loyalty.example"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        body = None
        while time.monotonic() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    body = (r.status, r.read().decode())
            except OSError:
                time.sleep(0.2)
        assert body is not None, "the api never answered"
        assert body[0] == 200
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert "channel sms: outbox" in output


def test_members_why_lists_deliveries_with_their_reasons(tmp_path: Path, sqlite_url: str):
    """`members why` shows consents and each recent delivery with why it was or was not sent."""
    from scheduler import claim_due_runs
    from workers.delivery import deliver_batch
    from workers.planning import plan_run

    from .support import add_member, create, runtime_for, sessions_for

    # Given a member who opted out of SMS by STOP and a broadcast that tried to reach them
    sessions = sessions_for(sqlite_url)
    with sessions.begin() as s:
        add_member(s, external_id="ADA-1", email=None, consents={"sms": "opted_out"})
    created = create(sessions, write_campaign(tmp_path, channels="[sms, email]"))
    claim_due_runs(sessions)
    rt = runtime_for(sqlite_url, tmp_path)
    plan_run(rt, created.run_id)
    with sessions() as s:
        ids = list(s.scalars(select(Delivery.id)))
    deliver_batch(rt, ids)
    # When the operator asks why
    result = _run(
        tmp_path, "members", "why", "ADA-1", LOYALCAST_DATABASE_URL=sqlite_url, COLUMNS="200"
    )
    # Then the consent and the suppression reason with its detail are shown
    assert result.returncode == 0, result.stderr
    out = " ".join(re.sub(r"[\u2500-\u257f]", " ", result.stdout).split())  # no box drawing
    assert "sms opted_out" in out
    assert "test-broadcast" in out
    assert "suppressed" in out
    assert "consent: sms: opted out" in out
    missing = _run(tmp_path, "members", "why", "NOBODY", LOYALCAST_DATABASE_URL=sqlite_url)
    assert missing.returncode == 1
    assert "no member with external id 'NOBODY'" in missing.stderr


def test_a_bad_policy_file_stops_every_command_naming_line_and_key(tmp_path: Path):
    """A mistake in LOYALCAST_POLICY_FILE is refused at start with its line and key."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "caps:\n  - {name: weekly, scope: all, window: 7d, limit: 0, categories: [marketing]}\n"
    )
    result = _run(tmp_path, "db", "upgrade", LOYALCAST_POLICY_FILE=str(policy))
    assert result.returncode == 2
    assert "policy.yaml, line 2, caps[0].limit" in " ".join(result.stderr.split())


def test_campaign_segments_may_use_the_declared_attributes_only(tmp_path: Path):
    """attributes.<key> works when the policy declares it, and is refused naming the path if not."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("attributes: {favourite_store: text}\n")
    good = write_campaign(
        tmp_path,
        name="stores",
        segment="{all: [{field: attributes.favourite_store, op: '=', value: downtown}]}",
    )
    ok = _run(tmp_path, "campaigns", "create", str(good), LOYALCAST_POLICY_FILE=str(policy))
    assert ok.returncode == 0, ok.stderr
    bad = write_campaign(
        tmp_path,
        name="shoes",
        segment="{all: [{field: attributes.shoe_size, op: '=', value: '42'}]}",
    )
    refused = _run(tmp_path, "campaigns", "create", str(bad), LOYALCAST_POLICY_FILE=str(policy))
    assert refused.returncode == 1
    assert "segment.all[0].field" in " ".join(refused.stderr.split())


def test_segments_save_preview_snapshot_and_campaigns_that_name_them(tmp_path: Path):
    """A saved segment is previewed with count, sample and plan, snapshotted, and used by name."""
    members = tmp_path / "members.jsonl"
    members.write_text(
        "".join(
            json.dumps(
                {
                    "external_id": f"G{i}",
                    "name": f"Gia {i}",
                    "email": f"g{i}@example.com",
                    "tier": "gold" if i % 2 else "silver",
                    "points_balance": 100 * i,
                }
            )
            + "\n"
            for i in range(10)
        )
    )
    assert _run(tmp_path, "members", "import", str(members)).returncode == 0
    segment = tmp_path / "gold.yaml"
    segment.write_text(
        "name: gold-rich\nrule:\n  all:\n    - {field: tier, op: '=', value: gold}\n"
        "    - {field: points_balance, op: '>=', value: 500}\n"
    )
    # When it is saved and previewed
    assert _run(tmp_path, "segments", "save", str(segment)).returncode == 0
    shown = _run(tmp_path, "segments", "preview", "gold-rich", COLUMNS="200")
    # Then the preview counts members 5, 7, 9 and shows them and a query plan
    assert shown.returncode == 0, shown.stderr
    assert "3 members match" in shown.stdout
    assert "G5" in shown.stdout
    assert "query plan:" in shown.stdout
    first = _run(tmp_path, "segments", "snapshot", "gold-rich")
    assert "gold-rich: 3 members; 3 entered, 0 left" in first.stdout
    # And a campaign can name it
    campaign = write_campaign(tmp_path, segment="gold-rich")
    created = _run(tmp_path, "campaigns", "create", str(campaign))
    assert created.returncode == 0, created.stderr
    # And a mistake in a segment file names its line and path
    segment.write_text("name: broken\nrule:\n  all:\n    - {field: tier, op: '=>', value: gold}\n")
    refused = _run(tmp_path, "segments", "save", str(segment))
    assert refused.returncode == 1
    assert "gold.yaml, line 4, rule.all[0].op: unknown operator" in " ".join(refused.stderr.split())


def test_campaigns_test_send_marks_the_message_and_records_nothing(tmp_path: Path):
    """test-send renders for one member, sends to them alone marked [TEST], and writes no row."""
    members = tmp_path / "members.jsonl"
    members.write_text(
        json.dumps(
            {
                "external_id": "T-1",
                "name": "Tess Ting",
                "phone": "+14155550123",
                "tier": "gold",
                "consent_sms": "yes",
            }
        )
        + "\n"
    )
    assert _run(tmp_path, "members", "import", str(members)).returncode == 0
    campaign = write_campaign(tmp_path, channels="[sms]")
    result = _run(tmp_path, "campaigns", "test-send", str(campaign), "--to", "T-1")
    assert result.returncode == 0, result.stderr
    assert "test send to T-1 (+14155550123) on sms [outbox]" in result.stdout
    [line] = [
        json.loads(x) for x in (tmp_path / "data" / "outbox" / "sms.jsonl").read_text().splitlines()
    ]
    assert line["test"] is True
    assert line["parts"]["text"].startswith("[TEST] Double points this weekend, Tess!")
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'loyalcast.db'}")
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Delivery)) == 0
    engine.dispose()
    refused = _run(tmp_path, "campaigns", "test-send", str(campaign), "--to", "NOBODY")
    assert refused.returncode == 1
    assert "no member with external id 'NOBODY'" in refused.stderr
