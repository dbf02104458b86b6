"""``GET /openapi.json``: an OpenAPI 3.1 document of the campaign API.

Written by hand next to the routes it describes (:mod:`api._campaigns`); the
tests validate the document with ``openapi-spec-validator`` and every
response they receive against it with ``openapi-core``, so it cannot drift
from what the routes answer. Served without a token: it holds no data.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

__all__ = ["openapi", "openapi_document"]

_STR = {"type": "string"}
_INT = {"type": "integer"}
_INSTANT = {"type": "string", "format": "date-time"}
_NULLABLE_INSTANT = {"type": ["string", "null"], "format": "date-time"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


_SCHEMAS: dict[str, Any] = {
    "Error": _object(["error"], error=_STR),
    "Problem": _object(
        ["field", "line", "message"],
        field={"type": "string", "description": "Dotted key path, e.g. segment.all[0].op."},
        line={"type": ["integer", "null"], "description": "Line in the YAML, when known."},
        message=_STR,
    ),
    "ValidationErrors": _object(["errors"], errors={"type": "array", "items": _ref("Problem")}),
    "CampaignSource": _object(
        ["source"],
        source={"type": "string", "description": "The campaign file's YAML."},
        at={**_INSTANT, "description": "Forecast only: plan the run at this instant."},
    ),
    "CampaignSpec": {
        **_object(
            ["name", "kind", "category"],
            name=_STR,
            kind={"enum": ["broadcast", "expiry_reminder", "welcome_sequence", "triggered"]},
            category={"enum": ["marketing", "service", "transactional"]},
            segment={"type": ["object", "string", "null"]},
            channels={"type": ["array", "string", "null"]},
            template={"type": ["string", "null"]},
            schedule={"type": ["object", "null"]},
        ),
        "description": "The validated campaign file, every key with its value or default.",
    },
    "Validated": _object(
        ["valid", "campaign"], valid={"const": True}, campaign=_ref("CampaignSpec")
    ),
    "Stored": _object(
        ["name", "version", "changed", "run_id", "due_at"],
        name=_STR,
        version=_INT,
        changed={"type": "boolean"},
        run_id={"type": ["integer", "null"]},
        due_at=_NULLABLE_INSTANT,
    ),
    "Schedule": {
        **_object(
            ["at"],
            at={
                "type": "string",
                "description": "An instant with offset, or a wall time read in `timezone`.",
            },
            timezone={
                "type": "string",
                "description": "An IANA zone, or `member`: each member's own (default UTC).",
            },
            spread={"type": "string", "description": "Stagger the messages, e.g. 2h."},
        ),
        "additionalProperties": False,
    },
    "Outcome": _object(
        ["status", "reason", "count"], status=_STR, reason={"type": ["string", "null"]}, count=_INT
    ),
    "Forecast": _object(
        ["campaign", "kind", "forecastable", "reason", "at", "audience", "deliveries", "outcomes"],
        campaign=_STR,
        kind=_STR,
        forecastable={"type": "boolean"},
        reason={"type": ["string", "null"], "description": "Why it cannot be forecast."},
        at=_NULLABLE_INSTANT,
        audience=_INT,
        deliveries=_INT,
        outcomes={"type": "array", "items": _ref("Outcome")},
        channels={"type": "object", "additionalProperties": _INT},
        suppressed={"type": "object", "additionalProperties": _INT},
        deferred={
            "type": "object",
            "additionalProperties": _object(
                ["count", "first_until", "last_until"],
                count=_INT,
                first_until=_INSTANT,
                last_until=_INSTANT,
            ),
        },
        failed={"type": "object", "additionalProperties": _INT},
        capped_by_rule={"type": "object", "additionalProperties": _INT},
        samples={
            "type": "object",
            "additionalProperties": {
                "type": "array",
                "items": _object(
                    ["member", "to", "sent_at", "parts"],
                    member=_STR,
                    to=_STR,
                    sent_at=_INSTANT,
                    parts={"type": "object", "additionalProperties": _STR},
                ),
            },
        },
        eta={
            "type": "array",
            "items": _object(
                ["channel", "messages", "live", "rates", "starts_at", "finishes_at", "seconds"],
                channel=_STR,
                messages=_INT,
                live={"type": "boolean"},
                rates={"type": "object", "additionalProperties": {"type": "number"}},
                starts_at=_INSTANT,
                finishes_at=_INSTANT,
                seconds={"type": "number"},
            ),
        },
        notes={"type": "array", "items": _STR},
    ),
    "Cancelled": _object(
        ["name", "status", "suppressed", "waited_seconds", "stranded"],
        name=_STR,
        status={"const": "cancelled"},
        suppressed=_INT,
        waited_seconds={"type": "number"},
        stranded=_INT,
    ),
    "Transition": _object(
        ["name", "status", "deliveries"],
        name=_STR,
        status={"enum": ["active", "paused"]},
        deliveries={"type": "integer", "description": "Deliveries now waiting, or due again."},
    ),
    "Replanned": _object(
        ["name", "runs"],
        name=_STR,
        runs={
            "type": "array",
            "items": _INT,
            "description": "Failed runs scheduled again (empty: none had failed).",
        },
    ),
    "CampaignStatus": _object(
        ["name", "status", "version", "runs", "counts", "total"],
        name=_STR,
        status={"enum": ["active", "paused", "cancelled"]},
        version=_INT,
        runs={
            "type": "array",
            "items": _object(
                ["id", "occurrence", "due_at", "status", "planned", "error"],
                id=_INT,
                occurrence=_STR,
                due_at=_NULLABLE_INSTANT,
                status={
                    "enum": ["scheduled", "planning", "planned", "completed", "cancelled", "failed"]
                },
                planned=_INT,
                error={
                    "type": ["string", "null"],
                    "description": "Why planning failed (status failed), and the fix.",
                },
            ),
        },
        counts={"type": "array", "items": _ref("Outcome")},
        total=_INT,
    ),
}

_RESPONSES: dict[str, Any] = {
    "BadRequest": _json("Error", "The body is not valid JSON (or not UTF-8)."),
    "Unauthorized": _json("Error", "Missing or wrong bearer token."),
    "NotFound": _json("Error", "No campaign has that name."),
    "Conflict": _json("Error", "The campaign cannot make that transition."),
    "UnsupportedType": _json("Error", "The body's content type is not accepted."),
    "TooLarge": _json("Error", "The body is over LOYALCAST_API_MAX_BODY_BYTES."),
    "Invalid": _json("ValidationErrors", "Every problem, with its field and line."),
    "Unconfigured": _json("Error", "LOYALCAST_API_TOKEN is not set: the API is off."),
}

_CAMPAIGN_FILE = {
    "required": True,
    "content": {
        "text/yaml": {"schema": {"type": "string"}},
        "application/yaml": {"schema": {"type": "string"}},
        "application/json": {"schema": _ref("CampaignSource")},
    },
}
_NAME = {"name": "name", "in": "path", "required": True, "schema": _STR}


def _errors(*names: str) -> dict[str, Any]:
    codes = {
        "BadRequest": "400",
        "Unauthorized": "401",
        "NotFound": "404",
        "Conflict": "409",
        "TooLarge": "413",
        "UnsupportedType": "415",
        "Invalid": "422",
        "Unconfigured": "503",
    }
    chosen = ("Unauthorized", "Unconfigured", *names)
    return {codes[n]: {"$ref": f"#/components/responses/{n}"} for n in chosen}


def _operation(summary: str, ok: dict[str, Any], *errors: str, **extra: Any) -> dict[str, Any]:
    return {"summary": summary, **extra, "responses": {**ok, **_errors(*errors)}}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the campaign API."""
    file_errors = ("BadRequest", "TooLarge", "UnsupportedType", "Invalid")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "loyalcast campaign API",
            "version": "1",
            "description": "Create, check, forecast and steer campaigns. Every route needs "
            "`Authorization: Bearer <LOYALCAST_API_TOKEN>`.",
        },
        "security": [{"bearer": []}],
        "paths": {
            "/campaigns/validate": {
                "post": _operation(
                    "Validate a campaign file and render its templates for sample members",
                    {"200": _json("Validated", "The file is valid; its parsed spec.")},
                    *file_errors,
                    requestBody=_CAMPAIGN_FILE,
                )
            },
            "/campaigns": {
                "post": _operation(
                    "Create a campaign, or a new version of it",
                    {
                        "201": _json("Stored", "Stored as a new campaign or version."),
                        "200": _json("Stored", "Unchanged: the same file is already stored."),
                    },
                    *file_errors,
                    requestBody=_CAMPAIGN_FILE,
                )
            },
            "/campaigns/forecast": {
                "post": _operation(
                    "Forecast a campaign's run without side effects",
                    {"200": _json("Forecast", "What the run would do.")},
                    *file_errors,
                    requestBody=_CAMPAIGN_FILE,
                    parameters=[
                        {
                            "name": "at",
                            "in": "query",
                            "required": False,
                            "description": "With a YAML body: plan the run at this instant.",
                            "schema": _INSTANT,
                        }
                    ],
                )
            },
            "/campaigns/{name}": {
                "get": _operation(
                    "A campaign's runs and deliveries counted by status and reason",
                    {"200": _json("CampaignStatus", "The campaign's progress.")},
                    "NotFound",
                    parameters=[_NAME],
                )
            },
            "/campaigns/{name}/schedule": {
                "post": _operation(
                    "Set or move the one-off run's instant (stored as a new version)",
                    {"200": _json("Stored", "The new version and its run.")},
                    "BadRequest",
                    "NotFound",
                    "Conflict",
                    "TooLarge",
                    "UnsupportedType",
                    "Invalid",
                    parameters=[_NAME],
                    requestBody={
                        "required": True,
                        "content": {"application/json": {"schema": _ref("Schedule")}},
                    },
                )
            },
            "/campaigns/{name}/cancel": {
                "post": _operation(
                    "Cancel: returns once nothing more of the campaign can be sent",
                    {"200": _json("Cancelled", "Cancelled.")},
                    "NotFound",
                    parameters=[_NAME],
                )
            },
            "/campaigns/{name}/pause": {
                "post": _operation(
                    "Pause: nothing more is sent or planned until resumed",
                    {"200": _json("Transition", "Paused.")},
                    "NotFound",
                    "Conflict",
                    parameters=[_NAME],
                )
            },
            "/campaigns/{name}/resume": {
                "post": _operation(
                    "Resume a paused campaign: its waiting deliveries are due at once",
                    {"200": _json("Transition", "Active again.")},
                    "NotFound",
                    "Conflict",
                    parameters=[_NAME],
                )
            },
            "/campaigns/{name}/replan": {
                "post": _operation(
                    "Schedule the failed runs again, once the program allows the campaign's rules",
                    {"200": _json("Replanned", "The runs scheduled again.")},
                    "NotFound",
                    "Conflict",
                    parameters=[_NAME],
                )
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "The OpenAPI document.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The value of LOYALCAST_API_TOKEN.",
                }
            },
            "schemas": _SCHEMAS,
            "responses": _RESPONSES,
        },
    }


async def openapi(_request: Request) -> JSONResponse:
    """``GET /openapi.json``: the document (no token needed)."""
    return JSONResponse(openapi_document())
