"""The base of every fake provider: a WSGI app on 127.0.0.1 that checks and records requests.

A fake provider subclasses :class:`FakeProvider` and registers routes
(``self.route("POST", "/v3/mail/send", handler)``). For each request the base:

1. validates it against the provider's official OpenAPI spec (every request,
   or a sample when ``validate_every`` > 1, e.g. in benchmarks); a request
   that fails is answered 400 with the validation error and recorded with
   ``valid=False``, so a test that checks ``fake.invalid`` sees it;
2. applies the next scripted response for that route, if any (an error body
   and status, headers such as Retry-After, a delay to force a timeout);
3. otherwise calls the route's handler, which returns the provider's normal
   success response.

Every request is kept in ``fake.requests`` (method, path, headers, body,
valid, error). The server runs in a thread; use it as a context manager.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

__all__ = ["FakeProvider", "RecordedRequest", "Scripted", "json_response"]


@dataclass(frozen=True)
class RecordedRequest:
    """One request a fake received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    valid: bool
    error: str | None
    at: float

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, list[str]]:
        from urllib.parse import parse_qs

        return parse_qs(self.body.decode(), keep_blank_values=True)


@dataclass(frozen=True)
class Scripted:
    """A response to give instead of the handler's: status, JSON body, headers, delay."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering (longer than the client's timeout = a timeout)."""


Handler = Callable[[Request, dict[str, str]], Response]


class _QuietHandler(WSGIRequestHandler):
    """No access log: the fake records requests itself."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class FakeProvider:
    """A provider's API on 127.0.0.1, checked against its OpenAPI spec."""

    #: Name used in messages.
    name = "fake"

    def __init__(self, spec: OpenAPI | None, *, validate_every: int = 1) -> None:
        self.spec = spec
        self.validate_every = validate_every
        self.requests: list[RecordedRequest] = []
        self._routes: list[tuple[str, re.Pattern[str], str, Handler]] = []
        self._scripts: dict[str, deque[Scripted]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._count = 0
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    # --- routes and scripts -------------------------------------------------

    def route(
        self, method: str, pattern: str, handler: Handler, *, name: str | None = None
    ) -> None:
        """Answer ``method`` on paths matching ``pattern`` ({var} segments) with ``handler``."""
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")
        self._routes.append((method.upper(), regex, name or pattern, handler))

    def script(self, route: str, *responses: Scripted) -> None:
        """Give the next requests to ``route`` (its pattern or name) these responses, in order."""
        with self._lock:
            self._scripts[route].extend(responses)

    def reset(self) -> None:
        """Forget recorded requests and pending scripts (between tests sharing a fake)."""
        with self._lock:
            self._scripts.clear()
            self.requests.clear()
            self._count = 0

    # --- introspection ------------------------------------------------------

    @property
    def invalid(self) -> list[RecordedRequest]:
        """Requests that failed spec validation (should be empty)."""
        return [r for r in self.requests if not r.valid]

    def calls(self, method: str, path_regex: str) -> list[RecordedRequest]:
        """Recorded requests whose method and path match."""
        pattern = re.compile(path_regex)
        return [r for r in self.requests if r.method == method and pattern.search(r.path)]

    # --- serving ------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{self.name} fake is not started")
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> FakeProvider:
        self._server = make_server(
            "127.0.0.1", 0, self._wsgi, threaded=True, request_handler=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-{self.name}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _validate(self, request: Request) -> str | None:
        if self.spec is None:
            return None
        with self._lock:
            self._count += 1
            sampled = (self._count - 1) % self.validate_every == 0
        if not sampled:
            return None
        try:
            self.spec.validate_request(WerkzeugOpenAPIRequest(request))
        except Exception as exc:
            cause = exc.__cause__
            detail = f"{exc}" + (f": {cause}" if cause is not None else "")
            return f"{type(exc).__name__}: {detail}"
        return None

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        body = request.get_data(cache=True)
        error = self._validate(request)
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.args),
                headers=dict(request.headers),
                body=body,
                valid=error is None,
                error=error,
                at=time.time(),
            )
        )
        response = self._dispatch(request, error)
        return response(environ, start_response)

    def _dispatch(self, request: Request, error: str | None) -> Response:
        if error is not None:
            return json_response({"fake": self.name, "spec_validation_error": error}, 400)
        for method, regex, name, handler in self._routes:
            match = regex.match(request.path)
            if method != request.method or match is None:
                continue
            with self._lock:
                queue = self._scripts.get(name)
                scripted = queue.popleft() if queue else None
            if scripted is not None:
                if scripted.delay:
                    time.sleep(scripted.delay)
                return json_response(scripted.body, scripted.status, scripted.headers)
            return handler(request, match.groupdict())
        return json_response(
            {"fake": self.name, "error": f"no route {request.method} {request.path}"}, 404
        )


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response (an empty body for ``None``)."""
    data = b"" if body is None else json.dumps(body).encode()
    response = Response(data, status=status, headers=headers or {})
    if body is not None:
        response.content_type = "application/json"
    return response
