"""Firebase Cloud Messaging (HTTP v1) through pyfcm: :class:`FcmSender`.

pyfcm builds the request (``parse_payload``), holds a requests session per
thread and loads the service account through google-auth, whose JWT-bearer
grant runs against the file's ``token_uri``. A small subclass changes four
things, each because the stock behaviour does not fit a worker:

1. **Base URL.** ``FCM_END_POINT_BASE`` is set on our subclass's *instance*
   (pyfcm's class attribute, shared by every other client, is left alone),
   and the endpoint is built from the configured project id; pyfcm would
   prefer the project id inside the credentials file.
2. **One request per send.** pyfcm's ``send_request`` sleeps for any
   Retry-After and calls itself again, without bound, holding the worker
   thread; its adapter retries POSTs on 502/503 and on read errors up to ten
   times, so a timed-out request can be delivered twice. Ours sends once
   (``HTTPAdapter(max_retries=0)``) and lets the worker decide (DESIGN §3, §8).
   A 401 is retried once with a freshly exchanged token.
3. **Token reuse.** pyfcm refreshes the OAuth token unconditionally on each
   thread's first request and every 30 minutes; ours exchanges a JWT only
   when the token is missing or near expiry, under a lock, shared by all threads.
4. **Timeouts and errors of the exchange.** google-auth's transport waits up
   to 120 s by default and the grant passes no timeout; pyfcm then wraps
   every failure in ``InvalidDataError``. Ours uses our timeout and lets
   google-auth's errors reach the error table, so an unreachable token
   endpoint is transient and a refused key is permanent.

The response is translated by :data:`FCM_ERRORS` in :func:`_translate`,
not by pyfcm's ``parse_response``, which drops Retry-After and FCM's error code.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import google.auth.exceptions
import google.auth.transport.requests
import requests
from google.oauth2 import service_account
from pyfcm import FCMNotification
from requests.adapters import HTTPAdapter

from .base import Receipt
from .errors import (
    DeliveryError,
    InvalidRecipient,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from .http import retry_after_seconds, transport_error
from .ratelimit import NoLimit, RateLimiter

__all__ = ["DEFAULT_FCM_BASE_URL", "FCM_ERRORS", "FCM_SCOPE", "FcmSender"]

DEFAULT_FCM_BASE_URL = "https://fcm.googleapis.com"
DEFAULT_TIMEOUT = 10.0
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
#: Every worker pauses this long after a 429 without Retry-After (FCM asks for at least a minute).
DEFAULT_QUOTA_BACKOFF = 60.0
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_NO_LIMIT = NoLimit()

#: FCM error codes (``details[].errorCode``) first, then Google's canonical
#: statuses, to what they mean for a delivery. ``INVALID_ARGUMENT`` about
#: ``message.token`` is an invalid recipient (see :func:`_names_token`); about
#: anything else it is our payload, and revoking the member's token would be wrong.
FCM_ERRORS: dict[str, tuple[type[DeliveryError], str]] = {
    "UNREGISTERED": (InvalidRecipient, "the registration token is no longer registered"),
    "NOT_FOUND": (InvalidRecipient, "FCM does not know the registration token"),
    "INVALID_ARGUMENT": (PermanentDeliveryError, "FCM refused the message as malformed"),
    "SENDER_ID_MISMATCH": (
        PermanentDeliveryError,
        "the token belongs to another Firebase sender than the configured project",
    ),
    "THIRD_PARTY_AUTH_ERROR": (
        PermanentDeliveryError,
        "the APNs certificate or Web Push key in the Firebase project settings was refused",
    ),
    "UNAUTHENTICATED": (PermanentDeliveryError, "FCM refused the service-account credentials"),
    "PERMISSION_DENIED": (
        PermanentDeliveryError,
        "the service-account credentials may not send for this project",
    ),
    "QUOTA_EXCEEDED": (TransientDeliveryError, "FCM sending quota exceeded"),
    "RESOURCE_EXHAUSTED": (TransientDeliveryError, "FCM sending quota exceeded"),
    "UNAVAILABLE": (TransientDeliveryError, "FCM is unavailable"),
    "INTERNAL": (TransientDeliveryError, "FCM had an internal error"),
}
_QUOTA_CODES = frozenset({"QUOTA_EXCEEDED", "RESOURCE_EXHAUSTED"})


class _TimedRequest(google.auth.transport.requests.Request):
    """google-auth's transport with our timeout for requests that name none (the token grant)."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Any = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        # google-auth's transport is not annotated.
        return super().__call__(  # type: ignore[no-untyped-call]
            url, method, body, headers, timeout=timeout or self.timeout, **kwargs
        )


class _PyFcm(FCMNotification):  # type: ignore[misc]  # pyfcm ships no type information
    """pyfcm's client with the four changes the module docstring explains."""

    def __init__(
        self,
        credentials: service_account.Credentials,
        project_id: str,
        base_url: str,
        timeout: float,
    ) -> None:
        super().__init__(
            credentials=credentials, project_id=project_id, adapter=HTTPAdapter(max_retries=0)
        )
        self.FCM_END_POINT_BASE = base_url.rstrip("/") + "/v1/projects"
        self._fcm_end_point = f"{self.FCM_END_POINT_BASE}/{project_id}/messages:send"
        self.token_request = _TimedRequest(timeout)
        self._token_lock = threading.Lock()

    def _get_access_token(self) -> str:
        with self._token_lock:
            if not self.credentials.valid:
                self.credentials.refresh(self.token_request)
            return str(self.credentials.token)

    def _post(self, payload: bytes, timeout: float | None) -> requests.Response:
        headers = {"Authorization": f"Bearer {self._get_access_token()}"}
        response: requests.Response = self.requests_session.post(
            self.fcm_end_point, data=payload, headers=headers, timeout=timeout
        )
        return response

    def send_request(self, payload: bytes, timeout: float | None = None) -> requests.Response:
        response = self._post(payload, timeout)
        if response.status_code == 401 and _google_error(response)[1] is None:
            # Our token expired (pyfcm checks only ACCESS_TOKEN_EXPIRED) or was revoked
            # early: one fresh exchange and one retry. A refused key fails in the
            # exchange; a second 401, or FCM's THIRD_PARTY_AUTH_ERROR (APNs or Web
            # Push keys in the Firebase settings), goes to the error table.
            with self._token_lock:
                self.credentials.token = None
            response = self._post(payload, timeout)
        return response

    def close(self) -> None:
        session = getattr(self.thread_local, "requests_session", None)
        if session is not None:
            session.close()
        self.token_request.session.close()


class FcmSender:
    """Sends notifications to FCM registration tokens, one HTTP v1 request each.

    Args:
        credentials_file: the service-account JSON file (``GOOGLE_APPLICATION_CREDENTIALS``).
        project_id: the Firebase project (``FCM_PROJECT_ID``); it wins over the file's.
        base_url: where FCM is (``LOYALCAST_FCM_BASE_URL``; a fake in tests).
        limiter: the provider's shared rate limit; blocked for every worker on a 429.
        timeout: seconds for each HTTP request, the token exchange included.

    Raises:
        ValueError: the credentials file is missing or is not a service-account key.
    """

    provider = "fcm"

    def __init__(
        self,
        credentials_file: Path,
        project_id: str,
        *,
        base_url: str = DEFAULT_FCM_BASE_URL,
        limiter: RateLimiter = _NO_LIMIT,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        from_file = service_account.Credentials.from_service_account_file
        try:
            # google-auth does not annotate this constructor.
            credentials = from_file(str(credentials_file), scopes=[FCM_SCOPE])  # type: ignore[no-untyped-call]
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"FCM credentials {credentials_file} are not a service-account key file: {exc}"
            ) from exc
        self.credentials_file = Path(credentials_file)
        self.project_id = project_id
        self.limiter = limiter
        self.timeout = timeout
        self._client = _PyFcm(credentials, project_id, base_url, timeout)

    @property
    def endpoint(self) -> str:
        """The ``messages:send`` URL this sender posts to."""
        return str(self._client.fcm_end_point)

    def send(self, token: str, *, title: str, body: str, data: Mapping[str, str]) -> Receipt:
        """Send a notification with ``title`` and ``body`` and a data payload to one device.

        Args:
            token: the device's FCM registration token.
            title: the notification title.
            body: the notification text.
            data: string key/values for the app (FCM's data payload takes only strings).

        Returns:
            A receipt whose id is FCM's message name (``projects/<id>/messages/<n>``).

        Raises:
            InvalidRecipient: the token is unregistered or malformed (revoke it).
            TransientDeliveryError: quota, FCM unavailable, a timeout or a connection error.
            PermanentDeliveryError: the credentials or the message were refused.
        """
        self.limiter.wait()
        payload = self._client.parse_payload(
            fcm_token=token,
            notification_title=title,
            notification_body=body,
            data_payload=dict(data),
        )
        try:
            response = self._client.send_request(payload, self.timeout)
        except google.auth.exceptions.RefreshError as exc:
            detail = f"the token endpoint refused the key in {self.credentials_file}: {exc}"
            if getattr(exc, "retryable", False):
                raise TransientDeliveryError(detail, code="token_endpoint") from exc
            raise PermanentDeliveryError(detail, code="credentials") from exc
        except google.auth.exceptions.TransportError as exc:
            detail = f"the OAuth token endpoint is unreachable: {exc}"
            raise TransientDeliveryError(detail, code="token_endpoint") from exc
        except requests.RequestException as exc:
            raise transport_error(exc, "FCM", self.timeout) from exc
        if response.status_code == 200:
            name = _json(response).get("name")
            return Receipt(
                provider_message_id=str(name or f"fcm-{uuid.uuid4().hex}"),
                accepted_at=datetime.now(UTC),
            )
        raise _translate(response, self.limiter, self.credentials_file, self.project_id)

    def close(self) -> None:
        """Close this thread's HTTP session and the token exchange's."""
        self._client.close()


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _google_error(response: requests.Response) -> tuple[dict[str, Any], str | None]:
    """Google's ``error`` object ({} if absent) and FCM's ``errorCode`` in it, if any."""
    error = _json(response).get("error")
    if not isinstance(error, dict):
        return {}, None
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("@type") == FCM_ERROR_TYPE:
            return error, str(detail.get("errorCode"))
    return error, None


def _names_token(error: Mapping[str, Any]) -> bool:
    """True when an INVALID_ARGUMENT error is about ``message.token``."""
    for detail in error.get("details") or []:
        violations = detail.get("fieldViolations") if isinstance(detail, dict) else None
        for violation in violations or []:
            if isinstance(violation, dict) and violation.get("field") == "message.token":
                return True
    return "registration token" in str(error.get("message", "")).lower()


def _translate(
    response: requests.Response, limiter: RateLimiter, credentials_file: Path, project_id: str
) -> DeliveryError:
    """The one place FCM's answers become delivery errors."""
    status = response.status_code
    error, fcm_code = _google_error(response)
    code = str(fcm_code or error.get("status") or status)
    message = str(error.get("message") or response.reason or "")
    wait = retry_after_seconds(response.headers.get("Retry-After"))
    kind, meaning = FCM_ERRORS.get(code, (None, ""))
    if kind is None:
        # No Google error shape (a proxy, a wrong base URL): judge by the status only,
        # and never call a token invalid on a bare 404.
        if status == 429:
            kind, meaning = TransientDeliveryError, "FCM is rate limiting us"
        elif status >= 500:
            kind, meaning = TransientDeliveryError, "FCM had a server error"
        elif status in (401, 403):
            kind, meaning = PermanentDeliveryError, "FCM refused the credentials"
        else:
            kind, meaning = PermanentDeliveryError, f"FCM answered {status} at {response.url}"
    if code == "INVALID_ARGUMENT" and _names_token(error):
        kind, meaning = InvalidRecipient, "the registration token is not a valid FCM token"
    if status in (401, 403):
        meaning += f" (service account {credentials_file}, project {project_id})"
    detail = f"{meaning}: {message}" if message else meaning
    if kind is TransientDeliveryError:
        if status == 429 or code in _QUOTA_CODES:
            wait = DEFAULT_QUOTA_BACKOFF if wait is None else wait
            limiter.block(wait)
        return TransientDeliveryError(detail, retry_after=wait, code=code)
    return kind(detail, code=code)
