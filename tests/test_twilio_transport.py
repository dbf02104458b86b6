"""TwilioTransport: the SDK's requests over urllib3, byte for byte what requests sent.

Real HTTP to servers on 127.0.0.1: a recording HTTP/1.1 server (keep-alive),
a forward proxy stand-in, and an HTTPS server with a certificate of its own.
The SDK's own requests-based ``TwilioHttpClient`` is the reference the
transport is compared with.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from channels import Message, TransientDeliveryError
from channels.twilio import TwilioSmsChannel
from channels.twilio_http import TwilioTransport, encode_form

ACCOUNT = "AC" + "0" * 32
TOKEN = "s3cret-auth-token"
CREATED = {"sid": "SM" + "1" * 32, "status": "queued", "account_sid": ACCOUNT}


@dataclass
class Seen:
    """One request as it arrived: request line, headers in order, body, client port."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    peer: int

    def header(self, name: str) -> str | None:
        found = [v for k, v in self.headers if k.lower() == name.lower()]
        return found[0] if found else None


Reply = Callable[[Seen], tuple[int, dict[str, str], bytes]]


def _sms() -> Message:
    return Message(
        delivery_id=1,
        dedupe_key="k",
        member_id=1,
        channel="sms",
        to="+15551234567",
        parts={"text": "hello"},
        category="service",
        campaign="c",
    )


def _created(seen: Seen) -> tuple[int, dict[str, str], bytes]:
    return 201, {"Content-Type": "application/json"}, json.dumps(CREATED).encode()


class Recorder:
    """An HTTP/1.1 server on 127.0.0.1 keeping connections alive; records every request."""

    def __init__(self, reply: Reply = _created, tls: ssl.SSLContext | None = None) -> None:
        self.seen: list[Seen] = []
        self.reply = reply
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(
                    self.command,
                    self.path,
                    list(self.headers.items()),
                    self.rfile.read(length),
                    self.client_address[1],
                )
                recorder.seen.append(seen)
                status, headers, body = recorder.reply(seen)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _no_proxy_or_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sets the proxy and CA variables it is about; none leak in from the machine."""
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
    ):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


class _RequestsReference(TwilioHttpClient):  # type: ignore[misc]
    """The SDK's own requests-based client, routed like the transport (the reference)."""

    def __init__(self, base_url: str) -> None:
        super().__init__(timeout=5.0)
        self.base_url = base_url

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        url = url.replace("https://api.twilio.com", self.base_url)
        return super().request(method, url, **kwargs)


def _exchanges(client: Client) -> None:
    """The requests compared: a create with a list, GET with params, DELETE, a JSON body."""
    client.messages.create(
        to="+15551234567",
        from_="+15005550006",
        body="Ünïcode & spaces + signs = 100% 🎉",
        media_url=["https://example.com/a.png", "https://example.com/b c.png"],
        status_callback="https://loyalty.example.com/cb?x=1&y=2",
        validity_period=600,
        send_as_mms=True,
    )
    base = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}"
    client.request(
        "GET", f"{base}/Messages.json?PageSize=5", params={"To": "+1555", "Tag": ["a", "b"]}
    )
    client.request("DELETE", f"{base}/Messages/SM{'2' * 32}.json")
    client.request(
        "POST",
        f"{base}/Content.json",
        data={"friendly_name": "ü", "types": {"twilio/text": {"body": "hi"}}},
        headers={"Content-Type": "application/json"},
    )
    client.request("POST", f"{base}/Messages.json", data={})


def test_requests_match_the_sdks_requests_client_byte_for_byte(recorder: Recorder) -> None:
    """Method, target, every header and the body are what requests sent, for each kind of call."""
    reference = _RequestsReference(recorder.url())
    ours = TwilioTransport(recorder.url(), 5.0)
    # Given the same SDK calls made through the SDK's requests client, then ours
    for http in (reference, ours):
        _exchanges(Client(ACCOUNT, TOKEN, http_client=http, environment={"X": "explicit"}))
    reference.session.close()
    ours.close()
    # Then each request of ours is the reference's, header for header
    half = len(recorder.seen) // 2
    assert half == 5
    for theirs, mine in zip(recorder.seen[:half], recorder.seen[half:], strict=True):
        assert (theirs.method, theirs.target, theirs.body) == (mine.method, mine.target, mine.body)
        assert sorted(theirs.headers) == sorted(mine.headers)
    # And the form repeats the list's key, and Basic auth is the account's
    assert b"MediaUrl=https%3A%2F%2Fexample.com%2Fa.png&MediaUrl=" in recorder.seen[half].body
    expected = base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
    assert recorder.seen[half].header("Authorization") == "Basic " + expected


@pytest.mark.parametrize(
    "data",
    [
        {"To": "+1", "Body": "a&b=c ü", "N": 3, "Flag": "true"},
        {"MediaUrl": ["x", None, "y"], "Empty": "", "Skip": None},
        [("A", "1"), ("A", "2"), ("B", b"\xff")],
        {"K": ("t", "u")},
    ],
)
def test_form_encoding_is_requests_own(data: Any) -> None:
    """encode_form gives what requests' own encoder gives, lists, None and bytes included."""
    assert requests.models.RequestEncodingMixin._encode_params(data) == encode_form(data)


def test_connections_are_reused_across_threads(recorder: Recorder) -> None:
    """Eight threads, 80 requests: at most eight connections, each kept for many requests."""
    transport = TwilioTransport(recorder.url(), 5.0, pool_size=8)
    url = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Messages.json"

    def post(i: int) -> int:
        response = transport.request("POST", url, data={"To": f"+1555{i}"}, auth=(ACCOUNT, TOKEN))
        return int(response.status_code)

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(post, range(80)))
    transport.close()
    assert statuses == [201] * 80
    assert len({seen.peer for seen in recorder.seen}) <= 8


def test_response_text_headers_and_last_headers(recorder: Recorder) -> None:
    """The SDK gets status, decoded text and headers; last_headers keeps this thread's."""
    recorder.reply = lambda seen: (
        429,
        {"Content-Type": "application/json; charset=utf-8", "Retry-After": "7"},
        json.dumps({"code": 20429, "message": "Too many requests ü"}).encode(),
    )
    transport = TwilioTransport(recorder.url(), 5.0)
    response = transport.request("GET", "https://api.twilio.com/x.json")
    assert (response.status_code, json.loads(response.text)["message"]) == (
        429,
        "Too many requests ü",
    )
    last = transport.last_headers()
    assert last is not None
    assert last.get("retry-after") == "7"
    seen_elsewhere: list[object] = []
    thread = threading.Thread(target=lambda: seen_elsewhere.append(transport.last_headers()))
    thread.start()
    thread.join()
    assert seen_elsewhere == [None]
    transport.close()


def test_a_body_cut_short_raises_what_requests_raises(recorder: Recorder) -> None:
    """An answer shorter than its Content-Length: the same exception type as requests'."""
    recorder.reply = lambda seen: (201, {"Content-Length": "100"}, b'{"sid": "SM')
    url = "https://api.twilio.com/2010-04-01/x.json"
    reference = _RequestsReference(recorder.url())
    with pytest.raises(requests.RequestException) as theirs:
        reference.request("POST", url, data={"A": "1"})
    reference.session.close()
    transport = TwilioTransport(recorder.url(), 5.0)
    with pytest.raises(requests.RequestException) as ours:
        transport.request("POST", url, data={"A": "1"})
    transport.close()
    assert type(theirs.value) is type(ours.value)


def test_connection_refused_and_read_timeout_are_requests_errors() -> None:
    """Nobody listening: ConnectionError; a silent server: ReadTimeout (ambiguous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    refused = TwilioTransport(f"http://127.0.0.1:{port}", 1.0)
    with pytest.raises(requests.ConnectionError):
        refused.request("GET", "https://api.twilio.com/x.json")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        quiet = TwilioTransport(f"http://127.0.0.1:{silent.getsockname()[1]}", 0.3)
        with pytest.raises(requests.ReadTimeout):
            quiet.request("GET", "https://api.twilio.com/x.json")


def test_nothing_secret_is_logged_even_at_debug(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """At DEBUG the SDK's lines are there, but no token, no Authorization, no proxy password."""
    monkeypatch.setenv(
        "HTTP_PROXY", f"http://robot:pr0xy-pass@127.0.0.1:{recorder.server.server_port}"
    )
    channel = TwilioSmsChannel(
        ACCOUNT, TOKEN, from_number="+15005550006", base_url="http://twilio.invalid"
    )
    message = _sms()
    with caplog.at_level(logging.DEBUG):
        channel.send(message)
    channel.close()
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "Response Status Code: 201" in text
    credentials = base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
    proxy_credentials = base64.b64encode(b"robot:pr0xy-pass").decode()
    for secret in (TOKEN, credentials, "pr0xy-pass", proxy_credentials):
        assert secret not in text


def test_the_environments_proxy_is_used_with_its_credentials(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY forwards the request (absolute URI) with Proxy-Authorization; read once."""
    proxy = recorder.url().replace("http://", "http://robot:p%40ss@")
    monkeypatch.setenv("HTTP_PROXY", proxy)
    transport = TwilioTransport("http://twilio.invalid:8080/base", 5.0)
    monkeypatch.delenv("HTTP_PROXY")
    transport.request("POST", "https://api.twilio.com/2010-04-01/M.json", data={"A": "1"})
    transport.close()
    [seen] = recorder.seen
    assert seen.target == "http://twilio.invalid:8080/base/2010-04-01/M.json"
    assert seen.header("Proxy-Authorization") == "Basic " + base64.b64encode(b"robot:p@ss").decode()
    assert seen.header("Host") == "twilio.invalid:8080"


def test_no_proxy_sends_directly(recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """A base URL NO_PROXY names is reached directly, whatever HTTP_PROXY says."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    transport = TwilioTransport(recorder.url(), 5.0)
    transport.request("GET", "https://api.twilio.com/2010-04-01/M.json")
    transport.close()
    assert transport.proxy == {}
    assert [seen.target for seen in recorder.seen] == ["/2010-04-01/M.json"]


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_the_ca_bundle_from_the_environment_verifies_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """HTTPS to a server with a CA of its own: refused with certifi's, accepted with the named."""
    cert_file, key_file = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server = Recorder(tls=context)
    try:
        url = "https://api.twilio.com/2010-04-01/M.json"
        default = TwilioTransport(server.url("https"), 5.0)
        with pytest.raises(requests.exceptions.SSLError):
            default.request("GET", url)
        default.close()
        monkeypatch.setenv(variable, str(cert_file))
        trusted = TwilioTransport(server.url("https"), 5.0)
        monkeypatch.delenv(variable)
        assert trusted.request("GET", url).status_code == 201
        trusted.close()
    finally:
        server.close()


def test_a_missing_ca_bundle_fails_https_like_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bundle path that does not exist: OSError naming it, as requests raised, for https only."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/corporate.pem")
    transport = TwilioTransport("https://127.0.0.1:9", 1.0)
    with pytest.raises(OSError, match=r"/nonexistent/corporate\.pem"):
        transport.request("GET", "https://api.twilio.com/x.json")


def test_redirects_are_refused_and_bad_timeouts_rejected(recorder: Recorder) -> None:
    transport = TwilioTransport(recorder.url(), 5.0)
    with pytest.raises(NotImplementedError):
        transport.request("GET", "https://api.twilio.com/x.json", allow_redirects=True)
    with pytest.raises(ValueError, match="0"):
        transport.request("GET", "https://api.twilio.com/x.json", timeout=0)
    assert recorder.seen == []


def test_a_channel_send_error_through_the_transport_is_transient(recorder: Recorder) -> None:
    """A 503 with Retry-After reaches the channel's table through the transport's headers."""
    recorder.reply = lambda seen: (
        503,
        {"Content-Type": "application/json", "Retry-After": "3"},
        json.dumps({"code": 20503, "message": "down", "status": 503}).encode(),
    )
    channel = TwilioSmsChannel(ACCOUNT, TOKEN, from_number="+15005550006", base_url=recorder.url())
    message = _sms()
    with pytest.raises(TransientDeliveryError) as caught:
        channel.send(message)
    channel.close()
    assert (caught.value.code, caught.value.retry_after) == ("20503", 3.0)


def _hang_up_after_reading(answer: bytes) -> tuple[socket.socket, threading.Thread]:
    """A server that reads one request, writes ``answer`` (maybe nothing) and hangs up."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(body) < length:
                body += conn.recv(65536)
            conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


@pytest.mark.parametrize(
    "answer",
    [
        b"",  # the connection dropped after the request went out
        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"sid": "SM',  # the body cut off
    ],
    ids=["no-answer", "cut-body"],
)
def test_an_answer_cut_off_after_the_request_went_out_is_ambiguous(answer: bytes) -> None:
    """Twilio may hold the message: never a plain retry, which could send it twice."""
    server, thread = _hang_up_after_reading(answer)
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    channel = TwilioSmsChannel(ACCOUNT, TOKEN, from_number="+15005550006", base_url=url)
    with server, pytest.raises(TransientDeliveryError) as caught:
        channel.send(_sms())
    channel.close()
    thread.join(timeout=5)
    assert caught.value.ambiguous
    assert "may have accepted" in str(caught.value)


def test_a_refused_connection_is_safely_retried() -> None:
    """Nothing went out: transient and not ambiguous."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    channel = TwilioSmsChannel(
        ACCOUNT, TOKEN, from_number="+15005550006", base_url=f"http://127.0.0.1:{port}"
    )
    with pytest.raises(TransientDeliveryError, match="cannot reach Twilio") as caught:
        channel.send(_sms())
    channel.close()
    assert not caught.value.ambiguous
