"""The campaign API: validate, create, forecast, schedule, cancel, pause, resume, replan, status.

Every route needs ``Authorization: Bearer <LOYALCAST_API_TOKEN>`` (401
without, 503 when no token is configured) and answers JSON. A campaign file
is sent as the request body with ``Content-Type: text/yaml`` (or
``application/yaml``), or as JSON ``{"source": "<the YAML>"}``; anything else
is 415. A file that does not validate is 422 with one entry per problem,
``{"errors": [{"field": "segment.all[0].op", "line": 7, "message": ...}]}``;
an unknown campaign is 404, an impossible transition (resume a cancelled
campaign, move a run that has started, replan a run whose rule the program
still does not allow) is 409. ``GET /openapi.json``
describes it all (:mod:`api._openapi`).

Templates of campaigns sent here come from ``LOYALCAST_TEMPLATE_PATH``, then
the built-ins. ``POST /campaigns/{name}/schedule`` stores a new version of
the campaign whose only change is its schedule, so the history keeps what
was planned before; the old instant's run is cancelled and the new one
scheduled, atomically with respect to the scheduler's claim.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime
from typing import Any

import yaml
from pydantic import ValidationError
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from store import Campaign, CampaignStatus, CampaignVersion, utcnow
from workers import CampaignFileError, CampaignSpec, Runtime
from workers.campaign_checks import ValidatedCampaign, validate_campaign
from workers.campaigns import Problem, Schedule
from workers.catalog import RunAlreadyStarted, campaign_status, store_campaign
from workers.control import cancel_campaign, pause_campaign, replan_campaign, resume_campaign
from workers.forecast import forecast

from ._common import Context, authorized, context, log

__all__ = [
    "cancel",
    "close_runtime",
    "create",
    "forecast_campaign",
    "pause",
    "replan",
    "resume",
    "schedule",
    "status",
    "validate",
]

#: Content types a campaign file may be sent as, besides JSON.
YAML_TYPES = ("text/yaml", "application/yaml", "application/x-yaml", "text/x-yaml")
_runtime_lock = threading.Lock()


class _Refused(Exception):
    """A request that ends with ``response``."""

    def __init__(self, response: JSONResponse) -> None:
        self.response = response


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _problems(problems: list[Problem]) -> JSONResponse:
    errors = [{"field": p.path, "line": p.line, "message": p.problem} for p in problems]
    return JSONResponse({"errors": errors}, status_code=422)


def _runtime(request: Request) -> Runtime:
    """The app's runtime for forecasts and the program policy (built on first use)."""
    state = request.app.state
    with _runtime_lock:
        if getattr(state, "campaign_runtime", None) is None:
            state.campaign_runtime = Runtime(context(request).settings)
        runtime: Runtime = state.campaign_runtime
        return runtime


def close_runtime(state: Any) -> None:
    """Close the runtime :func:`_runtime` built, if any (at shutdown)."""
    runtime = getattr(state, "campaign_runtime", None)
    if runtime is not None:
        runtime.close()
        state.campaign_runtime = None


async def _campaign_body(request: Request) -> tuple[str, dict[str, Any]]:
    """The campaign file's text and, for JSON, the other fields of the body."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if kind in YAML_TYPES:
        try:
            return body.decode("utf-8"), dict(request.query_params)
        except UnicodeDecodeError:
            raise _Refused(_error(400, "the body is not UTF-8")) from None
    if kind != "application/json":
        accepted = ", ".join((*YAML_TYPES, "application/json"))
        raise _Refused(_error(415, f"send the campaign file as one of: {accepted}"))
    data = _json(body)
    if not isinstance(data.get("source"), str):
        problem = Problem("source", "give the campaign file's YAML as a string")
        raise _Refused(_problems([problem]))
    return data["source"], data


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Refused(_error(400, f"the body is not valid JSON: {exc}")) from None
    if not isinstance(data, dict):
        raise _Refused(_error(400, "the body must be a JSON object"))
    return data


def _guarded(handler: Any) -> Any:
    """Check the bearer token first; turn :class:`_Refused` into its response."""

    async def route(request: Request) -> JSONResponse:
        refused = authorized(request)
        if refused is not None:
            return refused
        try:
            response: JSONResponse = await handler(request)
        except _Refused as exc:
            return exc.response
        except CampaignFileError as exc:
            return _problems(exc.problems)
        except LookupError as exc:
            return _error(404, str(exc))
        return response

    route.__name__ = handler.__name__
    route.__doc__ = handler.__doc__
    return route


def _validated(request: Request, text: str) -> ValidatedCampaign:
    ctx = context(request)
    rt = _runtime(request)
    return validate_campaign(
        ctx.sessions,
        text,
        "campaign",
        template_path=ctx.settings.template_dirs,
        program=rt.program,
    )


@_guarded
async def validate(request: Request) -> JSONResponse:
    """``POST /campaigns/validate``: the parsed spec (200), or every problem (422)."""
    text, _ = await _campaign_body(request)
    checked = await run_in_threadpool(_validated, request, text)
    return JSONResponse({"valid": True, "campaign": checked.spec.model_dump(mode="json")})


@_guarded
async def create(request: Request) -> JSONResponse:
    """``POST /campaigns``: store the campaign (201), or nothing when unchanged (200)."""
    text, _ = await _campaign_body(request)

    def work() -> Any:
        return store_campaign(context(request).sessions, _validated(request, text))

    created = await run_in_threadpool(work)
    log.info("campaign stored via api", campaign=created.name, version=created.version)
    return JSONResponse(
        _created(created),
        status_code=201 if created.changed else 200,
        headers={"Location": f"/campaigns/{created.name}"},
    )


def _created(created: Any) -> dict[str, Any]:
    return {
        "name": created.name,
        "version": created.version,
        "changed": created.changed,
        "run_id": created.run_id,
        "due_at": created.due_at.isoformat() if created.due_at else None,
    }


def _instant(raw: Any, field: str) -> datetime | None:
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(str(raw))
    except ValueError:
        value = None
    if value is None or value.utcoffset() is None:
        problem = Problem(field, "an ISO 8601 instant with offset, e.g. 2026-12-01T10:00:00+00:00")
        raise _Refused(_problems([problem]))
    return value


@_guarded
async def forecast_campaign(request: Request) -> JSONResponse:
    """``POST /campaigns/forecast``: what a run would do (``at``: in the body or the query)."""
    text, extra = await _campaign_body(request)
    at = _instant(extra.get("at"), "at")

    def work() -> dict[str, Any]:
        return forecast(_runtime(request), _validated(request, text), at=at).to_dict()

    return JSONResponse(await run_in_threadpool(work))


@_guarded
async def schedule(request: Request) -> JSONResponse:
    """``POST /campaigns/{name}/schedule``: move the one-off run to ``at`` in ``timezone``."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise _Refused(_error(415, "send the schedule as application/json"))
    data = _json(await request.body())
    name = request.path_params["name"]
    unknown = sorted(set(data) - {"at", "timezone", "spread"})
    if unknown:
        raise _Refused(_problems([Problem(key, "unknown field") for key in unknown]))
    try:
        new = Schedule.model_validate(data)
    except ValidationError as exc:
        raise _Refused(
            _problems(
                [
                    Problem(
                        ".".join(str(p) for p in e["loc"]) or "at",
                        e["msg"].removeprefix("Value error, "),
                    )
                    for e in exc.errors()
                ]
            )
        ) from None
    if new.due_at() <= utcnow():
        raise _Refused(_problems([Problem("at", "is in the past")]))
    ctx = context(request)
    created = await run_in_threadpool(_reschedule, ctx, name, new, data)
    return JSONResponse(_created(created))


def _reschedule(ctx: Context, name: str, new: Schedule, data: dict[str, Any]) -> Any:
    with ctx.sessions() as session:
        row = session.execute(
            select(Campaign, CampaignVersion)
            .join(
                CampaignVersion,
                (CampaignVersion.campaign_id == Campaign.id)
                & (CampaignVersion.version == Campaign.current_version),
            )
            .where(Campaign.name == name)
        ).one_or_none()
        if row is None:
            raise LookupError(f"no campaign named {name!r}")
        campaign, version = row
        session.expunge_all()
    if campaign.status == CampaignStatus.CANCELLED:
        raise _Refused(_error(409, f"campaign {name!r} is cancelled"))
    spec = CampaignSpec.model_validate(version.spec)
    if spec.kind != "broadcast" or (spec.schedule is not None and spec.schedule.recurring):
        raise _Refused(_error(409, f"campaign {name!r} has no one-off run to schedule"))
    source = yaml.safe_load(version.source)
    source["schedule"] = {k: v for k, v in data.items() if v is not None}
    text = yaml.safe_dump(source, sort_keys=False, allow_unicode=True)
    moved = ValidatedCampaign(spec.model_copy(update={"schedule": new}), version.templates, text)
    try:
        return store_campaign(ctx.sessions, moved, unstarted_only=True)
    except RunAlreadyStarted as exc:
        raise _Refused(_error(409, f"{exc}; its instant cannot move")) from None


@_guarded
async def cancel(request: Request) -> JSONResponse:
    """``POST /campaigns/{name}/cancel``: returns once nothing more of it can be sent."""
    ctx = context(request)
    name = request.path_params["name"]
    result = await run_in_threadpool(
        cancel_campaign, ctx.sessions, name, timeout=ctx.settings.lease_seconds
    )
    return JSONResponse(
        {
            "name": name,
            "status": CampaignStatus.CANCELLED.value,
            "suppressed": result.suppressed,
            "waited_seconds": round(result.waited, 3),
            "stranded": result.stranded,
        }
    )


@_guarded
async def pause(request: Request) -> JSONResponse:
    """``POST /campaigns/{name}/pause``: nothing more is sent or planned until resumed."""
    name = request.path_params["name"]
    try:
        waiting = await run_in_threadpool(pause_campaign, context(request).sessions, name)
    except ValueError as exc:
        raise _Refused(_error(409, str(exc))) from None
    return JSONResponse(
        {"name": name, "status": CampaignStatus.PAUSED.value, "deliveries": waiting}
    )


@_guarded
async def resume(request: Request) -> JSONResponse:
    """``POST /campaigns/{name}/resume``: waiting deliveries are due again at once."""
    name = request.path_params["name"]
    try:
        resumed = await run_in_threadpool(resume_campaign, context(request).sessions, name)
    except ValueError as exc:
        raise _Refused(_error(409, str(exc))) from None
    return JSONResponse(
        {"name": name, "status": CampaignStatus.ACTIVE.value, "deliveries": resumed}
    )


@_guarded
async def replan(request: Request) -> JSONResponse:
    """``POST /campaigns/{name}/replan``: its failed runs are scheduled again."""
    name = request.path_params["name"]
    program = _runtime(request).program
    try:
        runs = await run_in_threadpool(replan_campaign, context(request).sessions, name, program)
    except ValueError as exc:
        raise _Refused(_error(409, str(exc))) from None
    return JSONResponse({"name": name, "runs": runs})


@_guarded
async def status(request: Request) -> JSONResponse:
    """``GET /campaigns/{name}``: its runs and its deliveries counted by status and reason."""
    report = await run_in_threadpool(
        campaign_status, context(request).sessions, request.path_params["name"]
    )
    return JSONResponse(
        {
            "name": report.name,
            "status": report.status,
            "version": report.version,
            "runs": [
                {
                    **run,
                    "due_at": run["due_at"].isoformat() if run["due_at"] else None,
                }
                for run in report.runs
            ],
            "counts": [{"status": s, "reason": r, "count": n} for s, r, n in report.counts],
            "total": report.total,
        }
    )
