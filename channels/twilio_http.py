"""The HTTP client under the Twilio SDK: urllib3 directly, routed to a base URL.

The SDK's own ``TwilioHttpClient`` sends through a ``requests.Session``,
whose per-request machinery (preparing, merging settings, a cookie jar,
hooks, charset handling) costs a third of a millisecond of CPU per request:
0.95 ms per ``send`` against the fake through requests, 0.61 ms through
urllib3 directly.
:class:`TwilioTransport` is a ``twilio.http.HttpClient`` that sends the same
bytes through a urllib3 ``PoolManager`` instead; the SDK above it
(``client.messages.create`` and the rest) is unchanged.

What it keeps of the requests-based client:

- the request on the wire: requests' default headers (``Accept-Encoding``,
  ``Accept: */*``, ``Connection: keep-alive``) under the SDK's, Basic auth,
  ``Content-Length`` as requests sets it, the form encoded by requests'
  algorithm (a list repeats its key, ``None`` items are dropped), JSON for the
  SDK's JSON content types, ``params`` appended to the query, the URL
  requoted as requests does;
- what requests read from the environment, read once when it is built: the
  proxy for ``base_url`` (``requests.utils.get_environ_proxies``:
  ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``), chosen per URL as requests
  does, its credentials sent as ``Proxy-Authorization``; the CA bundle
  (``REQUESTS_CA_BUNDLE``, then ``CURL_CA_BUNDLE``, else certifi's, as
  requests uses);
- no retries (our retry policy lives in the workers) and no redirects; a
  connect and a read timeout of ``timeout`` seconds each;
- failures as requests' exception types, mapped from urllib3's as
  ``requests.adapters.HTTPAdapter.send`` and ``Response.iter_content`` map
  them, so the channel's error table reads them as before;
- the body decoded as requests does for JSON and text (charset from
  ``Content-Type``, else UTF-8 for JSON and ISO-8859-1 for ``text/*``); any
  other body without a charset is read as UTF-8 where requests would guess;
- the SDK's request and response log lines, at DEBUG only (they never
  include the ``Authorization`` header nor the body).

Not kept: a cookie jar (Twilio's REST API authenticates every request by
Basic auth) and following redirects (the SDK never asks for it; asking raises).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit, urlunsplit

import requests.exceptions as rex
import urllib3
from requests.utils import (
    DEFAULT_CA_BUNDLE_PATH,
    default_headers,
    get_encoding_from_headers,
    get_environ_proxies,
    prepend_scheme_if_needed,
    requote_uri,
    select_proxy,
)
from twilio.http import HttpClient
from twilio.http.response import Response
from urllib3.exceptions import (
    ClosedPoolError,
    ConnectTimeoutError,
    DecodeError,
    LocationValueError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import InvalidHeader as Urllib3InvalidHeader

__all__ = ["TWILIO_API_URL", "TwilioTransport", "encode_form"]

#: Where the SDK sends Messaging API requests.
TWILIO_API_URL = "https://api.twilio.com"

# The SDK's logger for request and response lines (twilio.http.http_client).
_logger = logging.getLogger("twilio.http_client")
# What a requests.Session sends unless the request overrides it.
_SESSION_HEADERS: Mapping[str, str] = dict(default_headers())
_JSON_TYPES = ("application/json", "application/scim+json")
# requests' pool size for a session's adapters.
_MIN_POOL_SIZE = 10


def encode_form(data: Any) -> str:
    """``data`` form-encoded exactly as ``requests`` encodes ``data=`` and ``params=``.

    A mapping or an iterable of pairs; a value that is a list (or any
    non-string iterable) repeats its key, ``None`` values are dropped, others
    are ``str()``-ed by ``urlencode``.
    """
    if isinstance(data, str | bytes | bool | int):
        raise ValueError("cannot encode objects that are not 2-tuples")
    items: Iterable[tuple[Any, Any]] = data.items() if hasattr(data, "items") else data
    pairs: list[tuple[Any, Any]] = []
    for key, values in items:
        if isinstance(values, str | bytes) or not hasattr(values, "__iter__"):
            values = (values,)
        for value in values:
            if value is not None:
                pairs.append(
                    (
                        key.encode("utf-8") if isinstance(key, str) else key,
                        value.encode("utf-8") if isinstance(value, str) else value,
                    )
                )
    return urlencode(pairs, doseq=True)


def _basic_auth(user: str, password: str) -> str:
    """The Authorization value requests' ``HTTPBasicAuth`` sends (latin-1, as requests)."""
    token = base64.b64encode(user.encode("latin1") + b":" + password.encode("latin1"))
    return "Basic " + token.decode("ascii")


def _requests_error(exc: Exception) -> Exception:
    """The exception requests raises for urllib3's ``exc`` from ``urlopen`` (retries off)."""
    if isinstance(exc, ProxyError):
        return rex.ProxyError(exc)
    if isinstance(exc, SSLError):
        return rex.SSLError(exc)
    if isinstance(exc, ReadTimeoutError):
        return rex.ReadTimeout(exc)
    if isinstance(exc, ConnectTimeoutError) and not isinstance(exc, NewConnectionError):
        return rex.ConnectTimeout(exc)
    if isinstance(exc, LocationValueError):
        return rex.InvalidURL(exc)
    if isinstance(exc, Urllib3InvalidHeader):
        return rex.InvalidHeader(exc)
    if isinstance(exc, NewConnectionError | ProtocolError | ClosedPoolError | OSError):
        return rex.ConnectionError(exc)
    return exc


def _body_error(exc: Exception) -> Exception:
    """The exception requests raises for urllib3's ``exc`` while reading a body."""
    if isinstance(exc, ProtocolError):
        return rex.ChunkedEncodingError(exc)
    if isinstance(exc, DecodeError):
        return rex.ContentDecodingError(exc)
    if isinstance(exc, ReadTimeoutError):
        return rex.ConnectionError(exc)
    if isinstance(exc, SSLError):
        return rex.SSLError(exc)
    return exc


class TwilioTransport(HttpClient):  # type: ignore[misc]  # twilio ships no type hints
    """Sends the SDK's requests through urllib3, ``https://api.twilio.com`` routed to ``base_url``.

    The path and query are kept (after ``base_url``'s own path, if any);
    other hosts are left alone. Connections are pooled per host and reused
    across threads; ``pool_size`` of them are kept per host (at least 10).
    Each thread's last response headers are kept for :meth:`last_headers`,
    because the SDK's exceptions drop them and Retry-After lives there.
    """

    def __init__(self, base_url: str, timeout: float, *, pool_size: int = _MIN_POOL_SIZE) -> None:
        super().__init__(_logger, False, timeout)
        target = urlsplit(base_url)
        self._base = urlunsplit((target.scheme, target.netloc, target.path.rstrip("/"), "", ""))
        #: The proxies the environment names for ``base_url``, as requests reads them.
        self.proxy: dict[str, str] = dict(get_environ_proxies(base_url))
        #: The CA bundle from the environment, None for certifi's (requests' default).
        self.ca_bundle: str | None = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get(
            "CURL_CA_BUNDLE"
        )
        ca = self.ca_bundle or DEFAULT_CA_BUNDLE_PATH
        self._ca_found = bool(ca) and os.path.exists(ca)
        self._pool_kw: dict[str, Any] = {
            "num_pools": _MIN_POOL_SIZE,
            "maxsize": max(pool_size, _MIN_POOL_SIZE),
            "block": False,
            "cert_reqs": "CERT_REQUIRED",
            "ca_cert_dir" if os.path.isdir(ca) else "ca_certs": ca,
        }
        self._direct = urllib3.PoolManager(**self._pool_kw)
        self._proxied: dict[str, urllib3.PoolManager] = {}
        self._lock = threading.Lock()
        self._auth: dict[tuple[str, str], str] = {}
        self._local = threading.local()

    def route(self, url: str) -> str:
        """The URL a request for ``url`` goes to."""
        if url.startswith(TWILIO_API_URL):
            rest = url[len(TWILIO_API_URL) :]
            if not rest or rest[0] in "/?#":
                return self._base + rest
        return url

    def request(
        self,
        method: str,
        url: str,
        params: Mapping[str, object] | None = None,
        data: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        """Send one request; the client's timeout unless one is given.

        Raises:
            requests.RequestException: The subclass requests would raise for a
                network failure (see the module docstring).
            ValueError: ``timeout`` is not positive.
            NotImplementedError: ``allow_redirects`` is asked for.
        """
        if timeout is None:
            timeout = self.timeout
        elif timeout <= 0:
            raise ValueError(timeout)
        if allow_redirects:
            raise NotImplementedError("TwilioTransport does not follow redirects")
        method = method.upper()
        url = self.route(url)
        debug = self.logger.isEnabledFor(logging.DEBUG)
        if debug:
            self.log_request({"method": method, "url": url, "params": params, "headers": headers})
        self._local.headers = None
        sent = dict(_SESSION_HEADERS)
        if headers:
            _merge(sent, headers)
        body = self._body(method, data, sent)
        if auth is not None:
            _merge(sent, {"Authorization": self._authorization(auth)})
        response = self._send(method, self._url(url, params), body, sent, timeout)
        self._local.headers = response.headers
        if debug:
            self.log_response(response.status_code, response)
        return response

    def log_request(self, kwargs: dict[str, Any]) -> None:
        """The SDK's ~8 INFO lines per request (URL, headers but Authorization): at DEBUG only.

        At a broadcast's pace they cost CPU and bury the worker's own lines
        (dramatiq pipes every line of a worker process to its parent).
        """
        if self.logger.isEnabledFor(logging.DEBUG):
            super().log_request(kwargs)

    def log_response(self, status_code: int, response: Any) -> None:
        """The SDK's two INFO lines per response (status, headers): at DEBUG only."""
        if self.logger.isEnabledFor(logging.DEBUG):
            super().log_response(status_code, response)

    def last_headers(self) -> Mapping[str, str] | None:
        """The headers of this thread's last response, None if the last request got none."""
        headers: Mapping[str, str] | None = getattr(self._local, "headers", None)
        return headers

    def close(self) -> None:
        """Close every pooled connection."""
        with self._lock:
            managers = [self._direct, *self._proxied.values()]
        for manager in managers:
            manager.clear()

    # --- building the request ---------------------------------------------

    def _authorization(self, auth: tuple[str, str]) -> str:
        value = self._auth.get(auth)
        if value is None:
            value = self._auth[auth] = _basic_auth(*auth)
        return value

    @staticmethod
    def _url(url: str, params: Mapping[str, object] | None) -> str:
        """``url`` with ``params`` appended to its query and requoted, as requests prepares it."""
        if params:
            query = encode_form(params)
            if query:
                base, hash_, fragment = url.partition("#")
                url = f"{base}{'&' if '?' in base else '?'}{query}{hash_}{fragment}"
        return requote_uri(url)

    @staticmethod
    def _body(method: str, data: Any, headers: dict[str, str]) -> bytes | None:
        """The body requests would send for the SDK's ``data``; sets the content headers."""
        body: bytes | None = None
        content_type = _get(headers, "Content-Type")
        if content_type in _JSON_TYPES:
            # TwilioHttpClient passes these as requests' json=.
            if data is not None:
                body = json.dumps(data, allow_nan=False).encode("utf-8")
        elif isinstance(data, str | bytes):
            body = data.encode("utf-8") if isinstance(data, str) else data
        elif data:
            body = encode_form(data).encode("utf-8")
            if content_type is None:
                headers["Content-Type"] = "application/x-www-form-urlencoded"
        if body:
            _merge(headers, {"Content-Length": str(len(body))})
        elif method not in ("GET", "HEAD") and _get(headers, "Content-Length") is None:
            body = None
            headers["Content-Length"] = "0"
        return body or None

    # --- sending -----------------------------------------------------------

    def _manager(self, url: str) -> urllib3.PoolManager:
        """The pool manager for ``url``: direct, or through the proxy requests would pick."""
        if not self.proxy:
            return self._direct
        proxy = select_proxy(url, self.proxy)
        if not proxy:
            return self._direct
        proxy = prepend_scheme_if_needed(proxy, "http")  # type: ignore[no-untyped-call]
        with self._lock:
            manager = self._proxied.get(proxy)
            if manager is None:
                manager = self._proxied[proxy] = _proxy_manager(proxy, self._pool_kw)
        return manager

    def _send(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: float
    ) -> Response:
        if not self._ca_found and url[:6].lower() == "https:":
            where = self.ca_bundle or DEFAULT_CA_BUNDLE_PATH
            raise OSError(
                f"Could not find a suitable TLS CA certificate bundle, invalid path: {where}"
            )
        manager = self._manager(url)
        try:
            raw = manager.urlopen(
                method,
                url,
                body=body,
                headers=headers,
                redirect=False,
                retries=False,
                timeout=urllib3.Timeout(connect=timeout, read=timeout),
                preload_content=False,
                decode_content=False,
            )
        except (Urllib3Error, OSError) as exc:
            raise _requests_error(exc) from exc
        try:
            content = raw.read(decode_content=True)
        except (Urllib3Error, OSError) as exc:
            raise _body_error(exc) from exc
        finally:
            raw.release_conn()
        encoding = get_encoding_from_headers(raw.headers) or "utf-8"
        try:
            text = str(content, encoding, errors="replace")
        except (LookupError, TypeError):
            text = str(content, errors="replace")
        return Response(int(raw.status), text, raw.headers)


def _get(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value, whatever the case of its name."""
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def _merge(headers: dict[str, str], extra: Mapping[str, str]) -> None:
    """Set ``extra`` into ``headers`` replacing any name in another case (requests' merge)."""
    for name, value in extra.items():
        if name not in headers:
            lowered = name.lower()
            for key in [k for k in headers if k.lower() == lowered]:
                del headers[key]
        headers[name] = value


def _proxy_manager(proxy: str, pool_kw: Mapping[str, Any]) -> urllib3.PoolManager:
    """A manager sending through ``proxy``, with its credentials, as requests builds one."""
    parsed = urlsplit(proxy)
    if not parsed.hostname:
        raise rex.InvalidProxyURL(
            "Please check proxy URL. It is malformed and could be missing the host."
        )
    user, password = unquote(parsed.username or ""), unquote(parsed.password or "")
    if proxy.lower().startswith("socks"):
        try:
            from urllib3.contrib.socks import SOCKSProxyManager
        except ImportError as exc:
            raise rex.InvalidSchema("Missing dependencies for SOCKS support.") from exc
        manager: urllib3.PoolManager = SOCKSProxyManager(
            proxy, username=user or None, password=password or None, **pool_kw
        )
        return manager
    proxy_headers = {"Proxy-Authorization": _basic_auth(user, password)} if user else {}
    return urllib3.ProxyManager(proxy, proxy_headers=proxy_headers, **pool_kw)
