"""Event intake: ``POST /events/enrollment`` starts members' welcome sequences.

The body is JSON, one member or up to 1000::

    {"member": "M0001", "campaign": "welcome"}          # campaign optional
    {"members": ["M0001", "M0002"]}

With a bearer token (``LOYALCAST_API_TOKEN``) it enrolls the members in every
active welcome sequence, or in the one named (:func:`workers.sequences.enroll`,
source ``api``), and answers 202 with what was enrolled and what was not
(``already active``, a finished sequence without ``restart``, not in the
segment). Steps already due are enqueued at once when Redis is configured,
else the next sweep sends them. Retrying a request is safe.

Errors are JSON ``{"error": ..., "field": ...}``: 400 for a body that is not
JSON, 422 for a bad field (named) or a campaign that is not a welcome
sequence, 404 for an unknown member (``unknown`` lists them; nobody is
enrolled) or campaign, 409 for a paused or cancelled campaign or a sequence
whose segment the program's policy file no longer allows (nobody is
enrolled; send it again once fixed), and 401/503 from the token check.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from workers.runtime import program_for
from workers.sequences import (
    CampaignNotEnrollable,
    EnrollResult,
    SequenceRuleNotAllowed,
    UnknownCampaign,
    UnknownMembers,
    enroll,
)

from ._common import Context, authorized, context, log

__all__ = ["MAX_MEMBERS", "enrollment"]

#: Members per request at most.
MAX_MEMBERS = 1000
_KEYS = ("member", "members", "campaign")


class _BadField(ValueError):
    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(f"{field}: {problem}")


def _error(status: int, field: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, "field": field, **extra}, status_code=status)


def _external_id(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _BadField(field, "must be a member's external id (a non-empty string)")
    if len(value.strip()) > 64:
        raise _BadField(field, "an external id has at most 64 characters")
    return value.strip()


def parse_body(body: Any) -> tuple[list[str], str | None, str]:
    """``(external ids, campaign, the field naming the members)`` from the request body.

    Raises:
        _BadField: naming the field at fault.
    """
    if not isinstance(body, Mapping):
        raise _BadField("(body)", 'must be a JSON object, e.g. {"member": "M0001"}')
    unknown = sorted(set(body) - set(_KEYS))
    if unknown:
        raise _BadField(unknown[0], f"unknown key; use {', '.join(_KEYS)}")
    if ("member" in body) == ("members" in body):
        raise _BadField("member", 'give either "member" (one) or "members" (a list)')
    if "member" in body:
        ids, field = [_external_id(body["member"], "member")], "member"
    else:
        members = body["members"]
        if not isinstance(members, list) or not members:
            raise _BadField("members", "must be a non-empty list of external ids")
        if len(members) > MAX_MEMBERS:
            raise _BadField("members", f"at most {MAX_MEMBERS} members per request")
        ids = [_external_id(value, f"members[{i}]") for i, value in enumerate(members)]
        field = "members"
    campaign = body.get("campaign")
    if campaign is not None and (not isinstance(campaign, str) or not campaign.strip()):
        raise _BadField("campaign", "must be a welcome sequence's name")
    return ids, campaign.strip() if campaign else None, field


def _program_attributes(request: Request, ctx: Context) -> Mapping[str, str]:
    state = request.app.state
    if getattr(state, "loyalcast_attributes", None) is None:
        state.loyalcast_attributes = dict(program_for(ctx.settings).attributes)
    attributes: Mapping[str, str] = state.loyalcast_attributes
    return attributes


async def enrollment(request: Request) -> JSONResponse:
    """``POST /events/enrollment`` (see the module docstring)."""
    refused = authorized(request)
    if refused is not None:
        return refused
    ctx = context(request)
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return _error(400, "(body)", "the body must be JSON")
    try:
        ids, campaign, field = parse_body(body)
    except _BadField as exc:
        return _error(422, exc.field, str(exc))
    broker = getattr(request.app.state, "loyalcast_broker", None)
    attributes = _program_attributes(request, ctx)
    try:
        result: EnrollResult = await run_in_threadpool(
            lambda: enroll(
                ctx.sessions,
                ids,
                source="api",
                campaign=campaign,
                broker=broker,
                attributes=attributes,
            )
        )
    except UnknownMembers as exc:
        return _error(404, field, str(exc), unknown=[str(u) for u in exc.unknown])
    except UnknownCampaign as exc:
        return _error(404, "campaign", str(exc))
    except CampaignNotEnrollable as exc:
        return _error(409 if exc.inactive else 422, "campaign", str(exc))
    except SequenceRuleNotAllowed as exc:
        return _error(409, "campaign", str(exc))
    log.info("enrollment event", members=len(ids), enrolled=len(result.enrolled))
    return JSONResponse(
        {
            "enrolled": [
                {
                    "member": e.external_id,
                    "campaign": e.campaign,
                    "cycle": e.cycle,
                    "enrollment_id": e.enrollment_id,
                }
                for e in result.enrolled
            ],
            "skipped": [
                {"member": s.external_id, "campaign": s.campaign, "reason": s.reason}
                for s in result.skipped
            ],
        },
        status_code=202,
    )
