"""A fake Twilio Messaging API, and Twilio's signed webhooks (status callbacks, inbound SMS).

:class:`FakeTwilio` answers ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``
like Twilio: HTTP Basic auth with the configured account SID and auth token
(401 with error 20003 otherwise), Twilio's own checks of the form (21211,
21602, 21603, 21617), and a ``201`` Message resource (``SM...`` SID, status
``queued``, or ``accepted`` for a Messaging Service without ``From``). Every
request is validated against Twilio's OpenAPI spec by :class:`FakeProvider`.

Scripting, for the next request(s) to the Messages route::

    fake.fail_next(21610)                # Twilio's error JSON, HTTP 400
    fake.rate_limit_next(retry_after=3)  # HTTP 429, code 20429, Retry-After: 3
    fake.slow_next(2.0)                  # accepted, but answered 2 s late
    fake.on_accept(hook)                 # hook(resource, status_callback) before each answer

Webhooks, signed with ``X-Twilio-Signature`` as Twilio signs them::

    fake.send_status_callback(url, sid, "delivered", auth_token)
    fake.send_inbound_sms(url, "+15551230000", "STOP", auth_token)
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import format_datetime
from functools import cache
from typing import Any

import requests
from openapi_core import OpenAPI
from twilio.request_validator import RequestValidator
from werkzeug.wrappers import Request, Response

from ..sms_segments import count_segments
from .server import FakeProvider, Scripted, json_response
from .specs import load_spec

__all__ = [
    "DEFAULT_ACCOUNT_SID",
    "DEFAULT_AUTH_TOKEN",
    "DEFAULT_NUMBER",
    "ERROR_MESSAGES",
    "FakeTwilio",
    "twilio_error",
    "twilio_spec",
]

#: The account the fake accepts unless told otherwise.
DEFAULT_ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
DEFAULT_AUTH_TOKEN = "fake-twilio-auth-token"  # noqa: S105 - a fake's well-known test credential
#: The number inbound messages are sent to unless told otherwise (Twilio's test number).
DEFAULT_NUMBER = "+15005550006"

API_VERSION = "2010-04-01"
#: Twilio's messages for the codes tests use most.
ERROR_MESSAGES: dict[int, str] = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "Internal Server Error",
    21211: "Invalid 'To' Phone Number",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21610: "Attempt to send to unsubscribed recipient",
    21611: "This 'From' number has exceeded the maximum number of queued messages",
    21614: "'To' number is not a valid mobile number",
    21617: "The concatenated message body exceeds the 1600 character limit.",
    30007: "Message filtered",
}
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_MAX_BODY = 1600
#: Seconds the webhook helpers wait for the receiving app.
_WEBHOOK_TIMEOUT = 10.0


@cache
def twilio_spec() -> OpenAPI:
    """Twilio's API v2010 spec as a validator, loaded once per process (it takes about 1.5 s)."""
    return load_spec("twilio")


#: What :meth:`FakeTwilio.on_accept` calls: the Message resource, its ``StatusCallback``.
AcceptHook = Callable[[dict[str, Any], str | None], None]


def twilio_error(code: int, status: int = 400, message: str | None = None) -> dict[str, Any]:
    """Twilio's error body: ``{"code", "message", "more_info", "status"}``."""
    return {
        "code": code,
        "message": message if message is not None else ERROR_MESSAGES.get(code, f"Error {code}"),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def _sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def _rfc2822(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC))


class FakeTwilio(FakeProvider):
    """Twilio's Messages API on 127.0.0.1, checked against Twilio's OpenAPI spec.

    Attributes:
        messages: The Message resources accepted, in order (the JSON returned).
        status_callbacks: Each accepted message's ``StatusCallback`` URL, by SID.
    """

    name = "twilio"
    #: The route of Message creation (for ``script`` and ``calls``).
    MESSAGES = "/2010-04-01/Accounts/{AccountSid}/Messages.json"

    def __init__(
        self,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        *,
        validate_every: int = 1,
    ) -> None:
        super().__init__(twilio_spec(), validate_every=validate_every)
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.messages: list[dict[str, Any]] = []
        self.status_callbacks: dict[str, str] = {}
        self._delays: deque[float] = deque()
        self._accept_hook: AcceptHook | None = None
        self._messages_lock = threading.Lock()
        self.route("POST", self.MESSAGES, self._create_message)

    def reset(self) -> None:
        """Forget recorded requests, accepted messages and pending scripts (reuse between tests)."""
        with self._lock:
            self._scripts.clear()
        with self._messages_lock:
            self.messages.clear()
            self.status_callbacks.clear()
            self._delays.clear()
            self._accept_hook = None
        self.requests.clear()

    # --- scripting ----------------------------------------------------------

    def fail_next(
        self,
        code: int,
        status: int = 400,
        message: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next Messages request with Twilio's error JSON for ``code``.

        Args:
            code: The Twilio error code (21610, 21211, 30007, ...).
            status: The HTTP status.
            message: Twilio's message; a known one for ``code`` by default.
            retry_after: Seconds for a Retry-After header, none if None.
        """
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        self.script(
            self.MESSAGES,
            Scripted(status=status, body=twilio_error(code, status, message), headers=headers),
        )

    def rate_limit_next(self, retry_after: float | None = 1) -> None:
        """Answer the next Messages request with HTTP 429, code 20429 and Retry-After."""
        self.fail_next(20429, status=429, retry_after=retry_after)

    def slow_next(self, seconds: float) -> None:
        """Accept the next message that passes the checks, but answer ``seconds`` late.

        The message is recorded in :attr:`messages` before the delay, as Twilio
        would have taken it: a client that times out meanwhile cannot know.
        """
        self._delays.append(seconds)

    def on_accept(self, hook: AcceptHook | None) -> None:
        """Call ``hook(resource, status_callback_url)`` for each accepted message, before answering.

        Twilio posts status callbacks on its own schedule, so one can reach
        the app before the answer to the request that created the message: a
        test makes that happen by posting the callback from ``hook``. ``None``
        removes the hook; :meth:`reset` does too.
        """
        self._accept_hook = hook

    # --- the API ------------------------------------------------------------

    def _dispatch(self, request: Request, error: str | None) -> Response:
        # Twilio authenticates before anything else, so this wraps the base's
        # dispatch: a missing or wrong Basic auth is a 401 (a missing one is
        # also recorded as invalid by the spec's security requirement).
        auth = request.authorization
        if (
            auth is None
            or auth.type != "basic"
            or (auth.username, auth.password) != (self.account_sid, self.auth_token)
        ):
            return json_response(
                twilio_error(20003, 401), 401, {"WWW-Authenticate": 'Basic realm="Twilio API"'}
            )
        return super()._dispatch(request, error)

    def _create_message(self, request: Request, path: dict[str, str]) -> Response:
        if path["AccountSid"] != self.account_sid:
            message = f"The requested resource {request.path} was not found"
            return json_response(twilio_error(20404, 404, message), 404)
        form = request.form
        to = form.get("To", "")
        sender = form.get("From") or None
        service = form.get("MessagingServiceSid") or None
        body = form.get("Body", "")
        if not _E164.match(to):
            message = f"The 'To' number {to} is not a valid phone number."
            return json_response(twilio_error(21211, 400, message), 400)
        if sender is None and service is None:
            return json_response(twilio_error(21603), 400)
        if not body and not form.getlist("MediaUrl") and not form.get("ContentSid"):
            return json_response(twilio_error(21602), 400)
        if len(body) > _MAX_BODY:
            return json_response(twilio_error(21617), 400)
        resource = self._resource(to=to, sender=sender, service=service, body=body)
        callback = form.get("StatusCallback") or None
        with self._messages_lock:
            self.messages.append(resource)
            if callback:
                self.status_callbacks[resource["sid"]] = callback
            delay = self._delays.popleft() if self._delays else 0.0
            hook = self._accept_hook
        if hook is not None:
            hook(resource, callback)
        if delay:
            time.sleep(delay)
        return json_response(resource, 201)

    def _resource(
        self, *, to: str, sender: str | None, service: str | None, body: str
    ) -> dict[str, Any]:
        sid = _sid("SM")
        now = _rfc2822(datetime.now(UTC))
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sender,
            "messaging_service_sid": service,
            "num_media": "0",
            "num_segments": str(max(1, count_segments(body).segments)),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            # Twilio says "accepted" while a Messaging Service still picks the sender.
            "status": "queued" if sender else "accepted",
            "subresource_uris": {"media": f"{uri}/Media.json", "feedback": f"{uri}/Feedback.json"},
            "tags": None,
            "to": to,
            "uri": f"{uri}.json",
        }

    # --- webhooks -----------------------------------------------------------

    def send_status_callback(
        self,
        url: str,
        message_sid: str,
        status: str,
        auth_token: str,
        extra: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """POST a message status callback to ``url``, signed with ``auth_token``.

        Args:
            url: The app's status callback URL, exactly as Twilio would call it.
            message_sid: The message (To, From and MessagingServiceSid come from
                :attr:`messages` when the fake sent it).
            status: ``queued``, ``sent``, ``delivered``, ``undelivered``, ``failed``...
            auth_token: The token to sign with (a wrong one makes a bad signature).
            extra: More or overriding fields, e.g. ``{"ErrorCode": "30007"}``.

        Returns:
            The app's response.
        """
        return _post_signed(url, self.status_callback_form(message_sid, status, extra), auth_token)

    def status_callback_form(
        self, message_sid: str, status: str, extra: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """The fields of a status callback for ``message_sid``, as Twilio posts them.

        ``To``, ``From`` and ``MessagingServiceSid`` come from :attr:`messages`
        when the fake sent the message; ``extra`` adds or overrides fields.
        """
        params: dict[str, str] = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "MessageSid": message_sid,
            "SmsSid": message_sid,
            "MessageStatus": status,
            "SmsStatus": status,
        }
        sent = next((m for m in self.messages if m["sid"] == message_sid), None)
        if sent is not None:
            params["To"] = sent["to"]
            if sent["from"]:
                params["From"] = sent["from"]
            if sent["messaging_service_sid"]:
                params["MessagingServiceSid"] = sent["messaging_service_sid"]
        params.update(extra or {})
        return params

    def send_inbound_sms(
        self,
        url: str,
        from_: str,
        body: str,
        auth_token: str,
        *,
        to: str = DEFAULT_NUMBER,
        extra: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """POST an incoming SMS webhook to ``url``, signed with ``auth_token``.

        Args:
            url: The app's inbound SMS URL.
            from_: The member's number (E.164).
            body: What they wrote ("STOP", "START", ...).
            auth_token: The token to sign with.
            to: The number they wrote to.
            extra: More or overriding fields.

        Returns:
            The app's response.
        """
        sid = _sid("SM")
        params: dict[str, str] = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "MessageSid": sid,
            "SmsMessageSid": sid,
            "SmsSid": sid,
            "SmsStatus": "received",
            "From": from_,
            "To": to,
            "Body": body,
            "NumMedia": "0",
            "NumSegments": str(max(1, count_segments(body).segments)),
        }
        params.update(extra or {})
        return _post_signed(url, params, auth_token)


def _post_signed(url: str, params: dict[str, str], auth_token: str) -> requests.Response:
    signature = str(RequestValidator(auth_token).compute_signature(url, params))
    headers = {"X-Twilio-Signature": signature, "User-Agent": "TwilioProxy/1.1"}
    return requests.post(url, data=params, headers=headers, timeout=_WEBHOOK_TIMEOUT)
