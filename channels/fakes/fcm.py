"""A fake Firebase Cloud Messaging (HTTP v1) with a real OAuth2 token endpoint.

Two services in one server, as a service-account client sees them:

``POST /token``
    Google's OAuth2 token endpoint for the JWT-bearer grant (RFC 7523). The
    fake makes an RSA key pair and writes the service-account JSON file
    (:meth:`FakeFcm.write_service_account`) whose ``token_uri`` points here;
    google-auth signs a JWT with that file's private key and posts it. The fake
    verifies the RS256 signature with the public key it kept and checks
    ``iss``, ``aud``, ``scope``, ``iat`` and ``exp`` before issuing a token.
    This endpoint is not part of the FCM spec: its request shape is checked
    by hand (a malformed request is recorded invalid), and a refused grant
    (bad signature, unknown account, expired JWT) is answered 400
    ``invalid_grant`` like Google does and kept in ``token_requests``.

``POST /v1/projects/{projectId}/messages:send``
    Validated against the pinned official spec, requires ``Bearer <issued
    token>`` (401 otherwise), answers ``{"name": "projects/<id>/messages/<n>"}``
    and keeps the message in ``messages``. Errors use FCM's real shape::

        {"error": {"code": 404, "message": "...", "status": "NOT_FOUND",
                   "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                                "errorCode": "UNREGISTERED"}]}}
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from werkzeug.wrappers import Request, Response

from .server import FakeProvider, Scripted, json_response
from .specs import load_spec

__all__ = ["FCM_ERROR_TYPE", "FakeFcm", "FcmMessage", "TokenRequest", "google_error"]

#: The ``@type`` of the detail that carries FCM's own error code.
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
#: The audience google-auth signs for, whatever ``token_uri`` says, as Google requires.
GOOGLE_OAUTH_AUDIENCE = "https://oauth2.googleapis.com/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: Scopes that allow sending (either one suffices).
SEND_SCOPES = frozenset(
    {
        "https://www.googleapis.com/auth/firebase.messaging",
        "https://www.googleapis.com/auth/cloud-platform",
    }
)
TOKEN_LIFETIME = 3600
#: Clock skew tolerated on ``iat`` (Google allows a few minutes).
CLOCK_SKEW = 300

#: Google's canonical status names by HTTP status.
CANONICAL = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
SEND_ROUTE = "/v1/projects/{projectId}/messages:send"


def _project_path(spec: dict[str, Any]) -> None:
    # Google's discovery-to-OpenAPI conversion writes ``/v1/{parent}/messages:send``
    # whose ``parent`` is ``projects/<id>``: it contains a slash, which no OpenAPI
    # path parameter matches, so no real request could ever validate. The live API
    # is ``/v1/projects/<id>/messages:send``; rename the path and its parameter.
    paths = spec["paths"]
    item = paths.pop("/v1/{parent}/messages:send")
    for param in item["post"]["parameters"]:
        if param.get("in") == "path" and param.get("name") == "parent":
            param["name"] = "projectId"
            param["description"] = "The Firebase project id."
    paths[SEND_ROUTE] = item


def _bearer_checked_by_handler(spec: dict[str, Any]) -> None:
    # openapi-core cannot check OAuth2 schemes: it warns "Unsupported scheme type"
    # on every request and accepts it anyway. The send handler checks the Bearer
    # token against the ones the token endpoint issued, so drop the declaration.
    spec["paths"][SEND_ROUTE]["post"].pop("security", None)


def google_error(
    status: int, message: str, *, error_code: str | None = None, extra: list[Any] | None = None
) -> dict[str, Any]:
    """A Google API error body, with FCM's error code in ``details`` when given."""
    details: list[Any] = []
    if error_code is not None:
        details.append({"@type": FCM_ERROR_TYPE, "errorCode": error_code})
    details.extend(extra or [])
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": CANONICAL.get(status, "UNKNOWN"),
    }
    if details:
        error["details"] = details
    return {"error": error}


def _b64url(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


@dataclass(frozen=True)
class TokenRequest:
    """One JWT-bearer grant the token endpoint saw."""

    client_email: str | None
    scope: str | None
    verified: bool
    """True when the JWT's signature verified and its claims held (a token was issued)."""
    error: str | None


@dataclass(frozen=True)
class FcmMessage:
    """One message FCM accepted."""

    name: str
    project_id: str
    message: dict[str, Any]


@dataclass(frozen=True)
class _Account:
    public_key: rsa.RSAPublicKey
    project_id: str


class FakeFcm(FakeProvider):
    """FCM HTTP v1 and Google's token endpoint on 127.0.0.1."""

    name = "fcm"

    def __init__(self, *, validate_every: int = 1) -> None:
        super().__init__(
            load_spec("fcm", overlays=(_project_path, _bearer_checked_by_handler)),
            validate_every=validate_every,
        )
        self.messages: list[FcmMessage] = []
        self.token_requests: list[TokenRequest] = []
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._accounts: dict[str, _Account] = {}
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (project id, expires at)
        self._unregistered: set[str] = set()
        self._invalid: set[str] = set()
        self._delays: deque[float] = deque()
        self._ids = itertools.count(6_000_000_000_000_000_001)
        self._state = threading.Lock()
        self.route("POST", "/token", self._token, name="token")
        self.route("POST", SEND_ROUTE, self._send, name="send")

    # --- test set-up -----------------------------------------------------------

    def write_service_account(self, path: Path, project_id: str, *, known: bool = True) -> Path:
        """Write a service-account JSON file whose ``token_uri`` is this fake's.

        Args:
            path: where to write it.
            project_id: the Firebase project the account belongs to.
            known: False writes a fresh key the fake never saw (a deleted or
                rotated key): the token endpoint refuses its JWTs.

        Returns:
            ``path``.
        """
        email = f"loyalcast-push@{project_id}.iam.gserviceaccount.com"
        key_id = secrets.token_hex(20)
        key = self._key if known else rsa.generate_private_key(65537, 2048)
        with self._state:
            if known or email not in self._accounts:
                # An unknown key still names an account, whose registered key is another one.
                self._accounts[email] = _Account(self._key.public_key(), project_id)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        info = {
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": key_id,
            "private_key": pem,
            "client_email": email,
            "client_id": str(secrets.randbelow(10**20)),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": f"{self.url}/token",
            "universe_domain": "googleapis.com",
        }
        path.write_text(json.dumps(info, indent=2), encoding="utf-8")
        return path

    def unregister(self, token: str) -> None:
        """Later sends to ``token`` answer 404 UNREGISTERED (the app was uninstalled)."""
        with self._state:
            self._unregistered.add(token)

    def invalidate(self, token: str) -> None:
        """Later sends to ``token`` answer 400 INVALID_ARGUMENT naming ``message.token``."""
        with self._state:
            self._invalid.add(token)

    def expire_tokens(self) -> None:
        """Every issued access token now answers 401 ACCESS_TOKEN_EXPIRED."""
        with self._state:
            self._tokens = {t: (p, 0.0) for t, (p, _) in self._tokens.items()}

    def fail_next(
        self, status: int, error_code: str | None, retry_after: float | None = None
    ) -> None:
        """Answer the next send with ``status`` and FCM ``error_code`` (and a Retry-After)."""
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        body = google_error(status, f"scripted {error_code or status}", error_code=error_code)
        self.script("send", Scripted(status, body, headers))

    def slow_next(self, seconds: float) -> None:
        """Hold the next send for ``seconds`` before handling it as usual (it may be accepted)."""
        with self._state:
            self._delays.append(seconds)

    def reset(self) -> None:
        """Forget requests, messages, tokens, scripts and device states; keep the accounts.

        For a fake shared by many tests; a request still being held by
        :meth:`slow_next` may land after a reset, so tests that slow requests
        should use a fake of their own.
        """
        with self._state:
            self.messages.clear()
            self.token_requests.clear()
            self._tokens.clear()
            self._unregistered.clear()
            self._invalid.clear()
            self._delays.clear()
        super().reset()

    # --- the token endpoint ------------------------------------------------------

    def _validate(self, request: Request) -> str | None:
        if request.path != "/token":
            return super()._validate(request)
        # Not in the FCM spec: the request shape RFC 7523 section 2.1 fixes.
        if request.mimetype != "application/x-www-form-urlencoded":
            return f"token request content type is {request.mimetype!r}, not a form"
        if request.form.get("grant_type") != JWT_BEARER:
            return f"grant_type is {request.form.get('grant_type')!r}, not {JWT_BEARER}"
        if request.form.get("assertion", "").count(".") != 2:
            return "assertion is not a JWS compact serialization"
        return None

    def _grant(self, assertion: str) -> tuple[str | None, str | None, str | None]:
        """Check a JWT-bearer assertion; return (client email, scope, refusal)."""
        try:
            head_b64, claims_b64, sig_b64 = assertion.split(".")
            header = json.loads(_b64url(head_b64))
            claims = json.loads(_b64url(claims_b64))
            signature = _b64url(sig_b64)
        except (ValueError, binascii.Error):
            return (
                None,
                None,
                "Invalid JWT: Token must be a short-lived token and in a valid format",
            )
        email, scope = claims.get("iss"), claims.get("scope")
        account = self._accounts.get(str(email))
        if header.get("alg") != "RS256":
            return email, scope, f"Invalid JWT: unsupported alg {header.get('alg')!r}"
        if account is None:
            return email, scope, "Invalid grant: account not found"
        try:
            account.public_key.verify(
                signature,
                f"{head_b64}.{claims_b64}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except InvalidSignature:
            return email, scope, "Invalid JWT Signature."
        now = time.time()
        if claims.get("aud") != GOOGLE_OAUTH_AUDIENCE:
            return email, scope, f"Invalid JWT: aud {claims.get('aud')!r}"
        if not SEND_SCOPES & set(str(scope or "").split()):
            return email, scope, "Invalid OAuth scope or ID token audience provided."
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int):
            return email, scope, "Invalid JWT: iat and exp are required"
        if iat > now + CLOCK_SKEW or exp <= now or exp - iat > TOKEN_LIFETIME:
            return email, scope, "Invalid JWT: Token must be a short-lived token (60 minutes)"
        return email, scope, None

    def _token(self, request: Request, params: dict[str, str]) -> Response:
        email, scope, refusal = self._grant(request.form["assertion"])
        with self._state:
            self.token_requests.append(TokenRequest(email, scope, refusal is None, refusal))
            if refusal is not None:
                return json_response({"error": "invalid_grant", "error_description": refusal}, 400)
            token = f"ya29.fake-{secrets.token_urlsafe(24)}"
            account = self._accounts[str(email)]
            self._tokens[token] = (account.project_id, time.time() + TOKEN_LIFETIME)
        body = {"access_token": token, "expires_in": TOKEN_LIFETIME, "token_type": "Bearer"}
        return json_response(body, headers={"Cache-Control": "no-store"})

    # --- messages:send -------------------------------------------------------------

    def _auth_error(self, request: Request, project_id: str) -> Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        with self._state:
            issued = self._tokens.get(token) if scheme == "Bearer" else None
        if issued is None:
            body = google_error(401, "Request had invalid authentication credentials.")
            return json_response(body, 401, {"WWW-Authenticate": 'Bearer realm="fcm"'})
        owner, expires = issued
        if expires <= time.time():
            info = {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "ACCESS_TOKEN_EXPIRED",
                "domain": "googleapis.com",
            }
            body = google_error(
                401, "Request had invalid authentication credentials.", extra=[info]
            )
            return json_response(body, 401)
        if owner != project_id:
            message = f"Permission 'cloudmessaging.messages.create' denied on projects/{project_id}"
            return json_response(google_error(403, message), 403)
        return None

    def _send(self, request: Request, params: dict[str, str]) -> Response:
        with self._state:
            delay = self._delays.popleft() if self._delays else 0.0
        if delay:
            time.sleep(delay)
        project_id = params["projectId"]
        refused = self._auth_error(request, project_id)
        if refused is not None:
            return refused
        message = (request.get_json(silent=True, force=True) or {}).get("message") or {}
        targets = [k for k in ("token", "topic", "condition") if message.get(k)]
        if len(targets) != 1:
            text = "Exactly one of token, topic or condition must be set."
            return json_response(google_error(400, text, error_code="INVALID_ARGUMENT"), 400)
        token = message.get("token")
        with self._state:
            if token in self._unregistered:
                body = google_error(
                    404, "Requested entity was not found.", error_code="UNREGISTERED"
                )
                return json_response(body, 404)
            if token in self._invalid:
                text = "The registration token is not a valid FCM registration token"
                violation = {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": "message.token", "description": text}],
                }
                body = google_error(400, text, error_code="INVALID_ARGUMENT", extra=[violation])
                return json_response(body, 400)
            name = f"projects/{project_id}/messages/{next(self._ids)}"
            self.messages.append(FcmMessage(name, project_id, message))
        return json_response({"name": name})
