"""A run whose rule the program no longer allows fails once, says why, and can be planned again.

The workers run with the policy file as it is now. If it no longer declares
an attribute a campaign's ``segment`` names, the run cannot plan: it ends
``failed`` with the reason in ``error`` (not retried, not re-planned by the
sweeper), and ``replan_campaign`` schedules it again once the program or the
campaign is fixed.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from loyalcast.cli._common import warn_rules_not_allowed
from scheduler import claim_due_runs
from store import CampaignRun, Delivery, utcnow
from workers.campaign_checks import rules_not_allowed
from workers.catalog import campaign_status, create_campaign
from workers.control import cancel_campaign, pause_campaign, replan_campaign, resume_campaign
from workers.delivery import deliver_batch
from workers.occurrences import ensure_runs
from workers.planning import plan_run
from workers.sweeping import sweep

from .support import (
    OPEN_PROGRAM,
    add_member,
    runtime_for,
    scripted_channels,
    sessions_for,
    settings_for,
)
from .test_cli import _run
from .test_pipeline import _rows
from .test_reminders import MONDAY, add_lot, reminder_file
from .test_triggered import T0, TRIGGERED, _broker, _platinum, _set_tier
from .test_triggered import _tick as trigger_tick
from .test_triggered import clock as clock  # the settable clock fixture

VIP = dataclasses.replace(OPEN_PROGRAM, attributes={"vip": "boolean"})
VIP_SEGMENT = "{field: attributes.vip, op: '=', value: true}"
BROADCAST = """\
name: vip-news
kind: broadcast
category: marketing
segment: {segment}
channels: [email]
template: winter-double-points
"""


def _broadcast(tmp_path: Path, segment: str = VIP_SEGMENT) -> Path:
    path = tmp_path / "vip-news.yaml"
    path.write_text(BROADCAST.format(segment=segment))
    return path


def _members(sessions, n: int = 2) -> list[int]:
    with sessions.begin() as s:
        return [
            add_member(
                s, tier="silver", attributes={"vip": True}, consents={"email": "opted_in"}
            ).id
            for _ in range(n)
        ]


def _run_row(sessions, run_id: int) -> CampaignRun:
    with sessions() as s:
        run = s.get(CampaignRun, run_id)
        assert run is not None
        return run


def _failed_broadcast(database_url: str, tmp_path: Path):
    """A VIP broadcast created under a program declaring ``vip``, planned by workers without."""
    sessions = sessions_for(database_url)
    members = _members(sessions)
    created = create_campaign(sessions, _broadcast(tmp_path), program=VIP)
    assert claim_due_runs(sessions) == [created.run_id]
    stale = runtime_for(database_url, tmp_path, broker=_broker())
    result = plan_run(stale, created.run_id)
    return sessions, created, members, stale, result


def test_a_stale_segment_fails_the_run_once_with_the_reason_and_the_fix(database_url, tmp_path):
    # Given a broadcast whose segment names attributes.vip, planned by workers
    # whose policy file no longer declares it
    sessions, created, _, stale, result = _failed_broadcast(database_url, tmp_path)
    # Then the plan job did not raise (no retries): the run failed, saying why and what next
    assert result.status == "failed"
    run = _run_row(sessions, created.run_id)
    assert run.status == "failed"
    assert run.error.startswith("campaign vip-news v1: segment")
    assert "vip" in run.error
    assert run.error.endswith("then: loyalcast campaigns replan vip-news)")
    assert _rows(sessions) == []
    # And the sweeper leaves it alone, however long it has been
    with sessions.begin() as s:
        s.execute(update(CampaignRun).values(claimed_at=utcnow() - timedelta(days=1)))
    assert sweep(stale).replanned == 0
    # And the campaign's status shows the run and its error
    report = campaign_status(sessions, "vip-news", rates={})
    assert [(r["status"], r["error"]) for r in report.runs] == [("failed", run.error)]
    # And a second plan job for it (a duplicate message) changes nothing
    assert plan_run(stale, created.run_id).status == "failed"
    stale.close()


def test_replan_refuses_while_the_rule_is_still_not_allowed_then_plans_once_fixed(
    database_url, tmp_path
):
    sessions, created, members, stale, _ = _failed_broadcast(database_url, tmp_path)
    # When replan is asked with the program still as it is: refused, the run untouched
    with pytest.raises(ValueError, match=r"vip-news v1: segment.*still does not allow"):
        replan_campaign(sessions, "vip-news", OPEN_PROGRAM)
    assert _run_row(sessions, created.run_id).status == "failed"
    # When the attribute is declared again (workers restarted) and the run replanned
    assert replan_campaign(sessions, "vip-news", VIP) == [created.run_id]
    run = _run_row(sessions, created.run_id)
    assert (run.status, run.error) == ("scheduled", None)
    # Then the next tick claims it and the plan writes its rows, which are sent
    assert claim_due_runs(sessions) == [created.run_id]
    channels = scripted_channels()
    fixed = runtime_for(database_url, tmp_path, channels=channels, program=VIP)
    assert plan_run(fixed, created.run_id).written == len(members)
    deliver_batch(fixed, [r.id for r in _rows(sessions)])
    assert sorted(m.member_id for m in channels["email"].sent) == members
    # And a second replan finds nothing to do
    assert replan_campaign(sessions, "vip-news", VIP) == []
    stale.close()
    fixed.close()


def test_a_failed_run_takes_the_campaigns_fixed_version(database_url, tmp_path):
    """Fixing the campaign instead of the program: the run that wrote nothing takes v2."""
    sessions, created, members, stale, _ = _failed_broadcast(database_url, tmp_path)
    # When the campaign is updated to a segment the program allows
    tier = "{field: tier, op: '=', value: gold}"
    with sessions.begin() as s:
        add_member(s, tier="gold", consents={"email": "opted_in"})
    updated = create_campaign(sessions, _broadcast(tmp_path, tier), program=OPEN_PROGRAM)
    assert updated.version == 2
    # Then replan, checked against the same program the workers run with, moves the run to v2
    assert replan_campaign(sessions, "vip-news", OPEN_PROGRAM) == [created.run_id]
    assert claim_due_runs(sessions) == [created.run_id]
    assert plan_run(stale, created.run_id).status == "planned"
    [row] = _rows(sessions)
    assert row.member_id not in members  # the gold member, by v2's segment
    with sessions() as s:
        assert s.get(CampaignRun, created.run_id).campaign_version_id == row.campaign_version_id
    stale.close()


def test_cancel_cancels_a_failed_run(database_url, tmp_path):
    sessions, created, _, stale, _ = _failed_broadcast(database_url, tmp_path)
    cancel_campaign(sessions, "vip-news")
    assert _run_row(sessions, created.run_id).status == "cancelled"
    with pytest.raises(ValueError, match="cancelled"):
        replan_campaign(sessions, "vip-news", VIP)
    stale.close()


def test_a_failed_triggered_run_holds_its_rows_from_the_sweeper_until_replanned(
    database_url, tmp_path, clock
):
    """A triggered run's rows exist before its plan narrows them: they must not go un-narrowed."""
    # Given a triggered campaign narrowed to VIPs, and two members entering its segment
    sessions = sessions_for(database_url)
    _platinum(sessions)
    with sessions.begin() as s:
        vip = add_member(s, tier="gold", attributes={"vip": True}).id
        other = add_member(s, tier="gold", attributes={"vip": False}).id
    path = tmp_path / "vip-welcome.yaml"
    path.write_text(
        TRIGGERED.format(name="vip-welcome", segment="platinum", every="1h", channels="[email]")
        + f"segment: {VIP_SEGMENT}\n"
    )
    create_campaign(sessions, path, program=VIP)
    trigger_tick(sessions, clock, T0)
    _set_tier(sessions, vip, "platinum")
    _set_tier(sessions, other, "platinum")
    trigger_tick(sessions, clock, T0 + timedelta(hours=1))
    [run_id] = claim_due_runs(sessions)
    # When workers without the attribute plan it
    broker = _broker()
    stale = runtime_for(database_url, tmp_path, broker=broker)
    assert plan_run(stale, run_id).status == "failed"
    # Then its rows wait, held, and the sweeper enqueues none of them
    assert {(r.status, r.reason) for r in _rows(sessions)} == {("deferred", "run_failed")}
    clock.now = T0 + timedelta(days=1)
    assert sweep(stale).requeued == 0
    # nor do a pause and a resume of the campaign release them
    pause_campaign(sessions, "vip-welcome")
    assert resume_campaign(sessions, "vip-welcome") == 0
    assert {(r.status, r.reason) for r in _rows(sessions)} == {("deferred", "run_failed")}
    assert broker.queues["deliver"].qsize() == 0
    # When the program is fixed and the run replanned, planned and delivered
    assert replan_campaign(sessions, "vip-welcome", VIP) == [run_id]
    assert claim_due_runs(sessions) == [run_id]
    channels = scripted_channels()
    fixed = runtime_for(database_url, tmp_path, channels=channels, program=VIP)
    plan_run(fixed, run_id)
    deliver_batch(fixed, [r.id for r in _rows(sessions)])
    # Then only the VIP was sent; the other was narrowed out by the plan
    assert [m.member_id for m in channels["email"].sent] == [vip]
    reasons = {r.member_id: (r.status, r.reason) for r in _rows(sessions)}
    assert reasons[other] == ("suppressed", "not_in_segment")
    stale.close()
    fixed.close()


def test_an_expiry_reminder_with_a_stale_segment_fails_its_run(database_url, tmp_path, clock):
    clock.now = MONDAY
    sessions = sessions_for(database_url)
    [member] = _members(sessions, 1)
    add_lot(sessions, member, "2026-12-07T12:00Z", 100)
    create_campaign(
        sessions, reminder_file(tmp_path, extra=f"segment: {VIP_SEGMENT}\n"), program=VIP
    )
    ensure_runs(sessions, utcnow())
    [run_id] = claim_due_runs(sessions)
    stale = runtime_for(database_url, tmp_path)
    assert plan_run(stale, run_id).status == "failed"
    assert "points-expiry v1: segment" in _run_row(sessions, run_id).error
    assert _rows(sessions) == []
    assert replan_campaign(sessions, "points-expiry", VIP) == [run_id]
    assert claim_due_runs(sessions) == [run_id]
    fixed = runtime_for(database_url, tmp_path, program=VIP)
    assert plan_run(fixed, run_id).written == 1
    stale.close()
    fixed.close()


def test_rules_not_allowed_lists_running_campaigns_the_program_no_longer_allows(
    database_url, tmp_path
):
    sessions = sessions_for(database_url)
    create_campaign(sessions, _broadcast(tmp_path), program=VIP)
    assert rules_not_allowed(sessions, VIP) == []
    [problem] = rules_not_allowed(sessions, OPEN_PROGRAM)
    assert problem.startswith("campaign vip-news v1: segment")
    cancel_campaign(sessions, "vip-news")
    assert rules_not_allowed(sessions, OPEN_PROGRAM) == []


def test_the_cli_shows_the_error_and_replans(sqlite_url, tmp_path):
    """``campaigns status`` prints why a run failed; ``campaigns replan`` schedules it again."""
    sessions, created, _, stale, _ = _failed_broadcast(sqlite_url, tmp_path)
    stale.close()
    shown = _run(tmp_path, "campaigns", "status", "vip-news", LOYALCAST_DATABASE_URL=sqlite_url)
    assert shown.returncode == 0, shown.stderr
    assert f"run {created.run_id} failed:" in shown.stdout
    assert "loyalcast campaigns replan vip-news" in " ".join(shown.stdout.split())
    # Still not allowed by the program the CLI reads (no policy file: no attributes)
    refused = _run(tmp_path, "campaigns", "replan", "vip-news", LOYALCAST_DATABASE_URL=sqlite_url)
    assert refused.returncode == 1
    assert "still does not allow" in " ".join(refused.stderr.split())
    # With a policy file declaring the attribute
    policy = tmp_path / "policy.yaml"
    policy.write_text("attributes:\n  vip: boolean\n")
    replanned = _run(
        tmp_path,
        "campaigns",
        "replan",
        "vip-news",
        LOYALCAST_DATABASE_URL=sqlite_url,
        LOYALCAST_POLICY_FILE=str(policy),
    )
    assert replanned.returncode == 0, replanned.stderr
    assert f"run(s) {created.run_id} scheduled again" in replanned.stdout
    assert _run_row(sessions, created.run_id).status == "scheduled"


def test_worker_and_run_warn_at_start_of_each_rule_the_program_no_longer_allows(
    sqlite_url, tmp_path, capsys
):
    sessions = sessions_for(sqlite_url)
    create_campaign(sessions, _broadcast(tmp_path), program=VIP)
    warn_rules_not_allowed(settings_for(sqlite_url, tmp_path))
    warning = " ".join(capsys.readouterr().err.split())
    assert warning.startswith("warning: campaign vip-news v1: segment")
    assert "loyalcast campaigns replan NAME" in warning
    policy = tmp_path / "policy.yaml"
    policy.write_text("attributes:\n  vip: boolean\n")
    warn_rules_not_allowed(settings_for(sqlite_url, tmp_path, policy_file=policy))
    assert capsys.readouterr().err == ""


def test_a_failed_run_with_rows_out_keeps_its_own_version(database_url, tmp_path):
    """Rows already out (here one waiting, deferred with no reason) were planned under v1."""
    sessions, created, members, stale, _ = _failed_broadcast(database_url, tmp_path)
    with sessions.begin() as s:
        run = s.get(CampaignRun, created.run_id)
        s.add(
            Delivery(
                dedupe_key=f"broadcast:{run.id}:{members[0]}",
                campaign_id=run.campaign_id,
                campaign_version_id=run.campaign_version_id,
                run_id=run.id,
                member_id=members[0],
                category="marketing",
                channels="email",
                status="deferred",
                not_before=utcnow() + timedelta(hours=1),
            )
        )
        v1 = run.campaign_version_id
    tier = "{field: tier, op: '=', value: gold}"
    assert create_campaign(sessions, _broadcast(tmp_path, tier), program=VIP).version == 2
    assert replan_campaign(sessions, "vip-news", VIP) == [created.run_id]
    assert _run_row(sessions, created.run_id).campaign_version_id == v1
    stale.close()
