"""The campaign API over HTTP: every route's happy and error paths, checked against its OpenAPI.

The app runs on a real database (SQLite and PostgreSQL). Every response a
test receives is validated with ``openapi-core`` against the document the
app serves at ``/openapi.json``, which itself passes ``openapi-spec-validator``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_spec_validator import validate as validate_spec
from sqlalchemy import select

from api._openapi import openapi_document
from scheduler import claim_due_runs
from store import CampaignRun, CampaignVersion, set_clock
from workers.catalog import create_campaign
from workers.planning import plan_run

from .support import OPEN_PROGRAM, add_member, runtime_for
from .test_api import start_api

TOKEN = "campaign-api-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CAMPAIGN = """\
name: winter
kind: broadcast
category: marketing
segment:
  all:
    - {field: tier, op: in, value: [gold]}
channels: [sms, email]
template: winter-double-points
schedule: {at: "2026-12-01T15:00Z"}
"""
BROKEN = CAMPAIGN.replace("op: in", 'op: "=>"')
YAML = {**AUTH, "Content-Type": "text/yaml"}


@dataclass
class _Request:
    """An HTTP request as openapi-core reads one."""

    host_url: str
    path: str
    method: str
    body: bytes | None
    content_type: str
    parameters: RequestParameters = field(default_factory=RequestParameters)


@dataclass
class _Response:
    status_code: int
    content_type: str
    headers: dict[str, str]
    data: bytes


@dataclass
class Client:
    """The app's test client; every response is validated against the OpenAPI document."""

    http: Any
    spec: OpenAPI
    sessions: Any

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        request = _Request(
            host_url="http://testserver",
            path=path.split("?")[0],
            method=method.lower(),
            body=None,
            content_type="application/json",
        )
        self.spec.validate_response(
            request,
            _Response(
                status_code=response.status_code,
                content_type=response.headers.get("content-type", ""),
                headers=dict(response.headers),
                data=response.content,
            ),
        )
        return response

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.call("POST", path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.call("GET", path, **kwargs)


@pytest.fixture
def client(database_url, tmp_path):
    """The API with a token, three gold members and one basic, the clock on 20 Nov 2026."""
    set_clock(lambda: NOW)
    try:
        with start_api(database_url, tmp_path, api_token=TOKEN) as a:
            with a.sessions.begin() as s:
                add_member(s, name="Ada One", consents={"sms": "opted_in"}, time_zone="UTC")
                add_member(s, name="Bo Two", consents={"email": "opted_in"}, time_zone="UTC")
                add_member(s, name="Cy Three", consents={"sms": "opted_out"}, time_zone="UTC")
                add_member(s, name="Di Four", tier="basic", time_zone="UTC")
            spec = OpenAPI.from_dict(a.client.get("/openapi.json").json())
            yield Client(a.client, spec, a.sessions)
    finally:
        set_clock(None)


def test_the_openapi_document_is_valid_and_describes_every_route(client):
    """/openapi.json is a valid OpenAPI 3.1 document with the bearer scheme and every route."""
    document = client.get("/openapi.json").json()
    validate_spec(document)
    assert document == openapi_document()
    assert document["openapi"] == "3.1.0"
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert set(document["paths"]) == {
        "/campaigns/validate",
        "/campaigns",
        "/campaigns/forecast",
        "/campaigns/{name}",
        "/campaigns/{name}/schedule",
        "/campaigns/{name}/cancel",
        "/campaigns/{name}/pause",
        "/campaigns/{name}/resume",
        "/campaigns/{name}/replan",
        "/openapi.json",
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/campaigns/validate"),
        ("POST", "/campaigns"),
        ("POST", "/campaigns/forecast"),
        ("GET", "/campaigns/winter"),
        ("POST", "/campaigns/winter/schedule"),
        ("POST", "/campaigns/winter/cancel"),
        ("POST", "/campaigns/winter/pause"),
        ("POST", "/campaigns/winter/resume"),
        ("POST", "/campaigns/winter/replan"),
    ],
)
def test_every_campaign_route_needs_the_bearer_token(client, method, path):
    """No token or a wrong one is 401 with a Bearer challenge, and changes nothing."""
    missing = client.call(method, path, content=CAMPAIGN, headers={"Content-Type": "text/yaml"})
    wrong = client.call(method, path, headers={"Authorization": "Bearer nope"})
    for response in (missing, wrong):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer realm="loyalcast"'
    with client.sessions() as s:
        assert s.scalars(select(CampaignVersion)).all() == []


def test_without_a_configured_token_the_campaign_routes_are_off(database_url, tmp_path):
    """LOYALCAST_API_TOKEN unset: 503 naming the setting."""
    with start_api(database_url, tmp_path) as a:
        spec = OpenAPI.from_dict(openapi_document())
        c = Client(a.client, spec, a.sessions)
        response = c.post("/campaigns/validate", content=CAMPAIGN, headers=YAML)
    assert response.status_code == 503
    assert "LOYALCAST_API_TOKEN" in response.json()["error"]


def test_validate_returns_the_parsed_spec_as_yaml_or_json(client):
    """A good file, as text/yaml or as JSON {source}, is 200 with its parsed spec."""
    as_yaml = client.post("/campaigns/validate", content=CAMPAIGN, headers=YAML)
    as_json = client.post("/campaigns/validate", json={"source": CAMPAIGN}, headers=AUTH)
    for response in (as_yaml, as_json):
        assert response.status_code == 200
        body = response.json()
        assert body["valid"] is True
        assert body["campaign"]["channels"] == ["sms", "email"]
        assert body["campaign"]["schedule"]["at"] == "2026-12-01T15:00:00Z"


def test_validate_names_the_field_and_line_of_every_problem(client):
    """A bad operator is 422 naming segment.all[0].op and line 6; a missing source names it."""
    response = client.post("/campaigns/validate", content=BROKEN, headers=YAML)
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert (error["field"], error["line"]) == ("segment.all[0].op", 6)
    assert "unknown operator" in error["message"]
    missing = client.post("/campaigns/validate", json={"text": CAMPAIGN}, headers=AUTH)
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["field"] == "source"


def test_a_wrong_content_type_is_415_and_bad_json_is_400(client):
    """Form data is 415 naming the accepted types; JSON that does not parse is 400."""
    form = client.post("/campaigns", data={"source": CAMPAIGN}, headers=AUTH)
    assert form.status_code == 415
    assert "text/yaml" in form.json()["error"]
    bad = client.post(
        "/campaigns", content=b"{nope", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert bad.status_code == 400
    schedule = client.post("/campaigns/winter/schedule", content="at: x", headers=YAML)
    assert schedule.status_code == 415


def test_create_stores_once_then_reports_unchanged_and_status_counts(client):
    """POST /campaigns is 201 with its run, 200 unchanged the second time; GET shows it."""
    first = client.post("/campaigns", content=CAMPAIGN, headers=YAML)
    assert first.status_code == 201
    assert first.headers["location"] == "/campaigns/winter"
    assert first.json()["due_at"] == "2026-12-01T15:00:00+00:00"
    again = client.post("/campaigns", json={"source": CAMPAIGN}, headers=AUTH)
    assert again.status_code == 200
    assert again.json()["changed"] is False
    status = client.get("/campaigns/winter", headers=AUTH)
    assert status.status_code == 200
    body = status.json()
    assert (body["status"], body["version"], body["total"]) == ("active", 1, 0)
    assert [run["status"] for run in body["runs"]] == ["scheduled"]
    unknown = client.get("/campaigns/nobody", headers=AUTH)
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "no campaign named 'nobody'"}
    refused = client.post("/campaigns", content=BROKEN, headers=YAML)
    assert refused.status_code == 422


def test_create_reads_templates_from_the_configured_path(database_url, tmp_path):
    """LOYALCAST_TEMPLATE_PATH overrides one part of a built-in template."""
    folder = tmp_path / "mine" / "winter-double-points"
    folder.mkdir(parents=True)
    (folder / "sms.text.j2").write_text("Ours, {{ member.first_name or 'friend' }}!\n")
    with start_api(
        database_url, tmp_path, api_token=TOKEN, template_path=str(tmp_path / "mine")
    ) as a:
        response = a.client.post("/campaigns", content=CAMPAIGN, headers=YAML)
        assert response.status_code == 201
        with a.sessions() as s:
            [version] = s.scalars(select(CampaignVersion)).all()
    templates = version.templates["winter-double-points"]
    assert templates["sms"]["text"].startswith("Ours,")
    assert templates["email"]["subject"].startswith("Double points")


def test_forecast_counts_without_storing_anything(client):
    """The forecast is 200 with counts by outcome; nothing is stored; a bad `at` is 422."""
    response = client.post(
        "/campaigns/forecast",
        json={"source": CAMPAIGN, "at": "2026-12-01T15:00:00+00:00"},
        headers=AUTH,
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["audience"], body["channels"]) == (3, {"email": 1, "sms": 1})
    assert body["suppressed"] == {"consent": 1}
    assert body["samples"]["sms"][0]["parts"]["text"].startswith("Double points")
    by_query = client.post(
        "/campaigns/forecast?at=2026-12-01T23:00:00%2B00:00", content=CAMPAIGN, headers=YAML
    )
    assert by_query.json()["deferred"]["quiet_hours"]["count"] == 1
    with client.sessions() as s:
        assert s.scalars(select(CampaignVersion)).all() == []
    bad = client.post("/campaigns/forecast", json={"source": CAMPAIGN, "at": "soon"}, headers=AUTH)
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "at"


def test_schedule_moves_the_run_as_a_new_version(client):
    """Moving the run stores version 2 and its run at the new instant; the old run is cancelled."""
    client.post("/campaigns", content=CAMPAIGN, headers=YAML)
    moved = client.post(
        "/campaigns/winter/schedule",
        json={"at": "2026-12-02T10:00", "timezone": "Europe/Berlin"},
        headers=AUTH,
    )
    assert moved.status_code == 200
    assert (moved.json()["version"], moved.json()["due_at"]) == (2, "2026-12-02T09:00:00+00:00")
    with client.sessions() as s:
        runs = [(r.occurrence, r.status) for r in s.scalars(select(CampaignRun).order_by("id"))]
        source = s.scalar(select(CampaignVersion.source).where(CampaignVersion.version == 2))
    assert runs == [
        ("2026-12-01T15:00:00+00:00", "cancelled"),
        ("2026-12-02T09:00:00+00:00", "scheduled"),
    ]
    assert "Europe/Berlin" in (source or "")


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"at": "2026-01-01T10:00Z"}, "at", "is in the past"),
        ({"at": "2026-12-02T10:00", "timezone": "Mars/Base"}, "timezone", "unknown IANA"),
        ({"at": "tomorrow"}, "at", "datetime"),
        ({"at": "2026-12-02T10:00", "when": "x"}, "when", "unknown field"),
    ],
)
def test_a_bad_schedule_is_422_naming_the_field(client, body, field, message):
    """Past instants, unknown zones, unreadable instants and unknown keys are refused."""
    client.post("/campaigns", content=CAMPAIGN, headers=YAML)
    response = client.post("/campaigns/winter/schedule", json=body, headers=AUTH)
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["field"] == field
    assert message in error["message"]


def test_a_run_that_started_or_a_cancelled_campaign_cannot_be_rescheduled(client):
    """Once the run is claimed the instant cannot move (409); unknown campaigns are 404."""
    client.post("/campaigns", content=CAMPAIGN, headers=YAML)
    set_clock(lambda: datetime(2026, 12, 1, 15, 0, tzinfo=UTC))
    claim_due_runs(client.sessions)
    set_clock(lambda: NOW)
    started = client.post(
        "/campaigns/winter/schedule", json={"at": "2026-12-05T10:00Z"}, headers=AUTH
    )
    assert started.status_code == 409
    assert "already started" in started.json()["error"]
    with client.sessions() as s:
        assert len(s.scalars(select(CampaignRun)).all()) == 1
    missing = client.post(
        "/campaigns/nobody/schedule", json={"at": "2026-12-05T10:00Z"}, headers=AUTH
    )
    assert missing.status_code == 404
    client.post("/campaigns/winter/cancel", headers=AUTH)
    cancelled = client.post(
        "/campaigns/winter/schedule", json={"at": "2026-12-05T10:00Z"}, headers=AUTH
    )
    assert cancelled.status_code == 409


def test_pause_resume_cancel_and_the_transitions_that_are_refused(client):
    """Pause and resume round-trip; after cancel, resume and pause are 409; unknown is 404."""
    client.post("/campaigns", content=CAMPAIGN, headers=YAML)
    paused = client.post("/campaigns/winter/pause", headers=AUTH)
    assert (paused.status_code, paused.json()["status"]) == (200, "paused")
    assert client.get("/campaigns/winter", headers=AUTH).json()["status"] == "paused"
    resumed = client.post("/campaigns/winter/resume", headers=AUTH)
    assert (resumed.status_code, resumed.json()["status"]) == (200, "active")
    cancelled = client.post("/campaigns/winter/cancel", headers=AUTH)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    for action in ("resume", "pause"):
        refused = client.post(f"/campaigns/winter/{action}", headers=AUTH)
        assert refused.status_code == 409
        assert "cancelled" in refused.json()["error"]
    for action in ("cancel", "pause", "resume"):
        assert client.post(f"/campaigns/nobody/{action}", headers=AUTH).status_code == 404
    assert json.loads(client.get("/campaigns/winter", headers=AUTH).content)["runs"][0][
        "status"
    ] == ("cancelled")


def test_status_shows_why_a_run_failed_and_replan_schedules_it_again(
    client, database_url, tmp_path
):
    """A run whose rule the program no longer allows: its error in status; replan 409, then 200."""
    # Given a campaign on attributes.vip, stored while the program declared it,
    # whose run failed to plan under the API's program (which does not)
    vip = dataclasses.replace(OPEN_PROGRAM, attributes={"vip": "boolean"})
    path = tmp_path / "vip.yaml"
    path.write_text(
        CAMPAIGN.replace("name: winter", "name: vip").replace(
            "{field: tier, op: in, value: [gold]}", "{field: attributes.vip, op: '=', value: true}"
        )
    )
    created = create_campaign(client.sessions, path, program=vip)
    set_clock(lambda: datetime(2026, 12, 1, 15, 0, tzinfo=UTC))
    assert claim_due_runs(client.sessions) == [created.run_id]
    rt = runtime_for(database_url, tmp_path)
    assert plan_run(rt, created.run_id).status == "failed"
    rt.close()
    set_clock(lambda: NOW)
    # Then the status names the run's error
    [run] = client.get("/campaigns/vip", headers=AUTH).json()["runs"]
    assert run["status"] == "failed"
    assert run["error"].startswith("campaign vip v1: segment")
    # And replan is refused while the API's program still lacks the attribute
    refused = client.post("/campaigns/vip/replan", headers=AUTH)
    assert refused.status_code == 409
    assert "still does not allow" in refused.json()["error"]
    # When the failed run's campaign is fixed by a new version the program allows
    fixed = client.post(
        "/campaigns",
        content=CAMPAIGN.replace("name: winter", "name: vip"),
        headers=YAML,
    )
    assert fixed.status_code in (200, 201), fixed.text
    replanned = client.post("/campaigns/vip/replan", headers=AUTH)
    assert (replanned.status_code, replanned.json()) == (200, {"name": "vip", "runs": [run["id"]]})
    [run] = client.get("/campaigns/vip", headers=AUTH).json()["runs"]
    assert (run["status"], run["error"]) == ("scheduled", None)
    assert client.post("/campaigns/nobody/replan", headers=AUTH).status_code == 404
