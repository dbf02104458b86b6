"""The ways a member enters a welcome sequence: the API, an import, a dramatiq message, the CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import select

from store import Delivery, Enrollment, Member
from workers.catalog import create_campaign
from workers.jobs import enqueue_enroll

from .support import OPEN_PROGRAM, add_member, create, sessions_for
from .test_api import start_api
from .test_sequences import write_sequence

TOKEN = "events-test-token"
LOYALCAST = str(Path(sys.executable).parent / "loyalcast")


def _members(sessions: Any, n: int, **fields: Any) -> list[str]:
    with sessions.begin() as s:
        return [add_member(s, **fields).external_id for _ in range(n)]


def _enrolled(sessions: Any) -> list[tuple[str, int, str]]:
    """(external id, cycle, source) of every enrollment."""
    with sessions() as s:
        return sorted(
            s.execute(
                select(Member.external_id, Enrollment.cycle, Enrollment.source).join(
                    Member, Member.id == Enrollment.member_id
                )
            ).all()
        )


@pytest.fixture
def api(database_url, tmp_path):
    with start_api(database_url, tmp_path, api_token=TOKEN) as a:
        create(a.sessions, write_sequence(tmp_path))
        yield a


def _post(a: Any, body: Any, token: str | None = TOKEN, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if isinstance(body, str):
        return a.client.post("/events/enrollment", content=body, headers=headers, **kwargs)
    return a.client.post("/events/enrollment", json=body, headers=headers, **kwargs)


def test_post_enrollment_enrolls_a_member_and_answers_202_with_what_was_done(api):
    """One member: 202 naming the enrollment; posting it again enrolls nobody new."""
    [member] = _members(api.sessions, 1)
    reply = _post(api, {"member": member})
    assert reply.status_code == 202
    [enrolled] = reply.json()["enrolled"]
    assert (enrolled["member"], enrolled["campaign"], enrolled["cycle"]) == (member, "welcome", 1)
    assert reply.json()["skipped"] == []
    again = _post(api, {"member": member, "campaign": "welcome"})
    assert (again.status_code, again.json()) == (
        202,
        {
            "enrolled": [],
            "skipped": [{"member": member, "campaign": "welcome", "reason": "active"}],
        },
    )
    assert _enrolled(api.sessions) == [(member, 1, "api")]
    with api.sessions() as s:  # step 1 is due now: pending, for the sweeper (no Redis here)
        rows = list(s.scalars(select(Delivery).order_by(Delivery.id)))
    assert [(r.status, r.enqueued_at) for r in rows[:1]] == [("pending", None)]


@pytest.mark.redis
def test_with_redis_configured_the_api_enqueues_the_steps_due_now(
    database_url, redis_url, redis_namespace, tmp_path
):
    """Step 1 (after 0m) is handed to the workers at once, not left for the next sweep."""
    overrides = {"api_token": TOKEN, "redis_url": redis_url, "queue_namespace": redis_namespace}
    with start_api(database_url, tmp_path, **overrides) as a:
        create(a.sessions, write_sequence(tmp_path))
        [member] = _members(a.sessions, 1)
        assert _post(a, {"member": member}).status_code == 202
        with a.sessions() as s:
            first = s.scalars(select(Delivery).order_by(Delivery.id)).first()
    client = redis.Redis.from_url(redis_url)
    queued = [dramatiq.Message.decode(m) for m in client.hvals(f"{redis_namespace}:deliver.msgs")]
    client.close()
    assert first is not None
    assert first.enqueued_at is not None
    assert [(m.actor_name, m.args) for m in queued] == [("deliver", ([first.id],))]


def test_post_enrollment_takes_a_list_of_members(api):
    members = _members(api.sessions, 3)
    reply = _post(api, {"members": members})
    assert reply.status_code == 202
    assert sorted(e["member"] for e in reply.json()["enrolled"]) == sorted(members)


def test_post_enrollment_needs_the_bearer_token(api):
    """No token or a wrong one: 401 with WWW-Authenticate, and nobody is enrolled."""
    [member] = _members(api.sessions, 1)
    for token in (None, "wrong"):
        reply = _post(api, {"member": member}, token=token)
        assert reply.status_code == 401
        assert reply.headers["WWW-Authenticate"] == 'Bearer realm="loyalcast"'
    assert _enrolled(api.sessions) == []


def test_post_enrollment_is_503_when_no_token_is_configured(database_url, tmp_path):
    with start_api(database_url, tmp_path) as a:
        reply = _post(a, {"member": "M1"})
    assert reply.status_code == 503
    assert reply.json() == {"error": "the API is not configured: set LOYALCAST_API_TOKEN"}


def test_an_unknown_member_is_404_and_nobody_in_the_request_is_enrolled(api):
    [known] = _members(api.sessions, 1)
    reply = _post(api, {"members": [known, "ghost"]})
    assert reply.status_code == 404
    assert reply.json() == {
        "error": "no member with external id 'ghost'",
        "field": "members",
        "unknown": ["ghost"],
    }
    assert _enrolled(api.sessions) == []


@pytest.mark.parametrize(
    ("body", "status", "field", "error"),
    [
        ("{not json", 400, "(body)", "the body must be JSON"),
        ([1, 2], 422, "(body)", '(body): must be a JSON object, e.g. {"member": "M0001"}'),
        (
            {"member": 7},
            422,
            "member",
            "member: must be a member's external id (a non-empty string)",
        ),
        (
            {"members": ["M1", ""]},
            422,
            "members[1]",
            "members[1]: must be a member's external id (a non-empty string)",
        ),
        ({"members": []}, 422, "members", "members: must be a non-empty list of external ids"),
        (
            {"member": "M1", "members": ["M2"]},
            422,
            "member",
            'member: give either "member" (one) or "members" (a list)',
        ),
        (
            {"member": "M1", "memebr": "x"},
            422,
            "memebr",
            "memebr: unknown key; use member, members, campaign",
        ),
        (
            {"member": "M1", "campaign": 3},
            422,
            "campaign",
            "campaign: must be a welcome sequence's name",
        ),
        ({"member": "M1", "campaign": "nope"}, 404, "campaign", "no campaign named 'nope'"),
    ],
)
def test_bad_input_gets_a_json_error_naming_the_field(api, body, status, field, error):
    reply = _post(api, body)
    assert (reply.status_code, reply.json()) == (status, {"error": error, "field": field})


def test_a_campaign_that_is_paused_is_409_and_one_that_is_not_a_sequence_422(api, tmp_path):
    from workers.control import pause_campaign

    from .support import write_campaign

    [member] = _members(api.sessions, 1)
    create(api.sessions, write_campaign(tmp_path, name="news"))
    reply = _post(api, {"member": member, "campaign": "news"})
    assert reply.status_code == 422
    assert (
        reply.json()["error"] == "campaign 'news' is a broadcast campaign, not a welcome sequence"
    )
    pause_campaign(api.sessions, "welcome")
    reply = _post(api, {"member": member, "campaign": "welcome"})
    assert (reply.status_code, reply.json()["field"]) == (409, "campaign")
    assert _enrolled(api.sessions) == []


def _cli(
    tmp_path: Path, database_url: str, *args: str, policy_file: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "LOYALCAST_DATA_DIR": str(tmp_path / "data"),
        "LOYALCAST_DATABASE_URL": database_url,
        "LOYALCAST_LOG_LEVEL": "WARNING",
    }
    if policy_file is not None:
        env["LOYALCAST_POLICY_FILE"] = policy_file
    return subprocess.run(
        [LOYALCAST, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_an_import_enrolls_the_members_it_creates_not_those_it_updates(database_url, tmp_path):
    """`members import` enrolls new members; `--no-enroll` (an initial load) enrolls nobody."""
    sessions = sessions_for(database_url)
    create(sessions, write_sequence(tmp_path))
    with sessions.begin() as s:
        add_member(s, external_id="OLD1")
    first = tmp_path / "first.csv"
    first.write_text(
        "external_id,name,email,consent_email\nOLD1,Old One,,\nNEW1,New One,n1@example.com,yes\n"
    )
    result = _cli(tmp_path, database_url, "members", "import", str(first))
    assert result.returncode == 0, result.stderr
    assert "1 members enrolled in welcome" in result.stdout
    assert _enrolled(sessions) == [("NEW1", 1, "import")]
    # An initial load of existing members with --no-enroll starts nothing
    second = tmp_path / "second.csv"
    second.write_text("external_id,name\nNEW2,New Two\n")
    result = _cli(tmp_path, database_url, "members", "import", "--no-enroll", str(second))
    assert result.returncode == 0, result.stderr
    assert _enrolled(sessions) == [("NEW1", 1, "import")]
    # And an operator can enroll a member by hand; an unknown one enrolls nobody
    result = _cli(tmp_path, database_url, "members", "enroll", "NEW2", "--campaign", "welcome")
    assert (result.returncode, result.stdout.strip()) == (0, "1 members enrolled in welcome")
    result = _cli(tmp_path, database_url, "members", "enroll", "OLD1", "GHOST")
    assert result.returncode == 1
    assert "no member with external id 'GHOST'; nobody was enrolled" in result.stderr
    assert _enrolled(sessions) == [("NEW1", 1, "import"), ("NEW2", 1, "cli")]


def test_a_sequence_whose_segment_the_program_no_longer_allows_enrolls_nobody(
    database_url, tmp_path
):
    """API 409 and CLI exit 1 naming the campaign and rule; no sequence starts, not even
    the one without a segment; once the attribute is declared again, enrolling works."""
    # Given a plain welcome sequence and a VIP one created while the program declared vip
    vip = dataclasses.replace(OPEN_PROGRAM, attributes={"vip": "boolean"})
    with start_api(database_url, tmp_path, api_token=TOKEN) as a:
        create(a.sessions, write_sequence(tmp_path))
        path = write_sequence(
            tmp_path,
            name="vip-welcome",
            extra="segment: {field: attributes.vip, op: '=', value: true}\n",
        )
        create_campaign(a.sessions, path, program=vip)
        with a.sessions.begin() as s:
            member = add_member(s, attributes={"vip": True}).external_id
        # When the API (no policy file: vip undeclared) is sent an enrollment
        reply = _post(a, {"member": member})
        assert (reply.status_code, reply.json()["field"]) == (409, "campaign")
        assert "'vip-welcome': segment" in reply.json()["error"]
        assert "no longer allows" in reply.json()["error"]
        assert _enrolled(a.sessions) == []
    # When an import creates a member under the same program
    new = tmp_path / "new.csv"
    new.write_text("external_id,name\nNEW1,New One\n")
    result = _cli(tmp_path, database_url, "members", "import", str(new))
    assert result.returncode == 1
    assert "1 new members imported, none enrolled" in " ".join(result.stderr.split())
    assert _enrolled(sessions_for(database_url)) == []
    # Then with the attribute declared again, enrolling them starts both sequences
    policy = tmp_path / "policy.yaml"
    policy.write_text("attributes:\n  vip: boolean\n")
    result = _cli(
        tmp_path, database_url, "members", "enroll", "NEW1", member, policy_file=str(policy)
    )
    assert result.returncode == 0, result.stderr
    assert "2 members enrolled in welcome" in result.stdout
    assert "1 members enrolled in vip-welcome" in result.stdout


@pytest.mark.slow
@pytest.mark.redis
def test_another_service_enrolls_members_with_a_raw_dramatiq_message(
    database_url, env, procs, redis_url, redis_namespace, tmp_path
):
    """A message on `events`, sent as another service would, is consumed by `loyalcast worker`."""
    sessions = sessions_for(database_url)
    create(sessions, write_sequence(tmp_path))
    known = _members(sessions, 2)
    # Given another service with a plain RedisBroker and no loyalcast code, on the same Redis
    other = RedisBroker(url=redis_url, namespace=redis_namespace)  # type: ignore[no-untyped-call]
    for kwargs in (
        {"external_ids": [*known, "not-imported-yet"], "campaign": "welcome"},
        {"external_ids": "M1"},  # malformed: must fail at once, not be retried
    ):
        other.enqueue(
            dramatiq.Message(
                queue_name="events", actor_name="enroll", args=(), kwargs=kwargs, options={}
            )
        )
    enqueue_enroll(other, [known[0]])  # a repeat, through loyalcast's helper: harmless
    # When the worker processes run (the same queues `loyalcast worker` consumes)
    procs("workers", env, processes=1, threads=2)
    try:
        other.join("events", timeout=60_000)
        other.join("deliver", timeout=60_000)
    finally:
        other.close()
    # Then both known members were enrolled once and got step 1; the unknown id was skipped
    assert _enrolled(sessions) == sorted((m, 1, "event") for m in known)
    with sessions() as s:
        sent = s.execute(
            select(Member.external_id, Delivery.status, Delivery.channel)
            .join(Member, Member.id == Delivery.member_id)
            .where(Delivery.payload["step"].as_integer() == 0)
        ).all()
    assert sorted(sent) == sorted((m, "sent", "email") for m in known)
    # And the malformed message went straight to the dead-letter queue (a retry would wait
    # in the delay queue, which join() waits for too)
    client = redis.Redis.from_url(redis_url)
    dead = client.hvals(f"{redis_namespace}:events.XQ.msgs")
    client.close()
    assert [dramatiq.Message.decode(d).kwargs for d in dead] == [{"external_ids": "M1"}]


def test_a_sequence_is_created_and_test_sent_step_by_step_from_the_cli(sqlite_url, tmp_path):
    """`campaigns create` stores a sequence (no run); `test-send --step 2` sends step 2."""
    sessions = sessions_for(sqlite_url)
    [member] = _members(sessions, 1, consents={"email": "opted_in", "sms": "opted_in"})
    path = write_sequence(tmp_path)
    created = _cli(tmp_path, sqlite_url, "campaigns", "create", str(path))
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == (
        "campaign welcome created (version 1); steps are written as members enroll"
    )
    sent = _cli(
        tmp_path, sqlite_url, "campaigns", "test-send", str(path), "--to", member, "--step", "2"
    )
    assert sent.returncode == 0, sent.stderr
    [line] = (tmp_path / "data" / "outbox" / "sms.jsonl").read_text().splitlines()
    assert json.loads(line)["parts"]["text"] == "[TEST] Step 2 of 3 for Member"
    too_far = _cli(
        tmp_path, sqlite_url, "campaigns", "test-send", str(path), "--to", member, "--step", "4"
    )
    assert too_far.returncode == 1
    assert "steps: no step 4: the sequence has 3" in too_far.stderr
