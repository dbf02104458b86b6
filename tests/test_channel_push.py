"""The push channel with the real clients (pyfcm + google-auth, pywebpush) against the fakes.

FCM requests are checked against the pinned FCM OpenAPI spec and the OAuth
JWT-bearer exchange is verified by the fake's token endpoint; Web Push
requests are checked against RFC 8030/8291/8292 and decrypted by the fake.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from channels.base import Channel, Message, Receipt
from channels.errors import InvalidRecipient, PermanentDeliveryError, TransientDeliveryError
from channels.fakes.fcm import FakeFcm
from channels.fakes.server import Scripted
from channels.fakes.webpush import FakeWebPushService, VapidKeys, make_vapid_keys
from channels.fcm import FcmSender
from channels.push import PushChannel
from channels.webpush import DEFAULT_TTL, WebPushSender

from .support import RecordingLimiter

pytestmark = [pytest.mark.usefixtures("provider_specs")]

PROJECT = "loyalcast-test"
TITLE = "120 points expire on 3 Dec"
BODY = "Use them before Friday — café vouchers included."


def push_message(to: str, kind: str | None, *, delivery_id: int = 41, **metadata: Any) -> Message:
    meta: dict[str, Any] = dict(metadata)
    if kind is not None:
        meta["push_kind"] = kind
    return Message(
        delivery_id=delivery_id,
        dedupe_key=f"run-1:member-{delivery_id}",
        member_id=delivery_id,
        channel="push",
        to=to,
        parts={"title": TITLE, "body": BODY},
        category="service",
        campaign="points-expiry",
        metadata=meta,
    )


def webpush_message(subscription: dict[str, Any], *, delivery_id: int = 41) -> Message:
    return push_message(
        subscription["endpoint"],
        "webpush",
        delivery_id=delivery_id,
        webpush_keys=subscription["keys"],
    )


@pytest.fixture(scope="module")
def shared_fcm() -> Iterator[FakeFcm]:
    fake = FakeFcm()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def shared_webpush() -> Iterator[FakeWebPushService]:
    fake = FakeWebPushService()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def fcm_fake(shared_fcm: FakeFcm) -> FakeFcm:
    """The module's fake FCM, emptied for this test (stopping a server takes 0.5 s)."""
    shared_fcm.reset()
    return shared_fcm


@pytest.fixture
def webpush_fake(shared_webpush: FakeWebPushService) -> FakeWebPushService:
    """The module's fake push service, emptied for this test."""
    shared_webpush.reset()
    return shared_webpush


@pytest.fixture
def own_fcm() -> Iterator[FakeFcm]:
    """A fake FCM of this test's own (a held request must not land in another test)."""
    fake = FakeFcm()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def own_webpush() -> Iterator[FakeWebPushService]:
    """A fake push service of this test's own."""
    fake = FakeWebPushService()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def limiter() -> RecordingLimiter:
    return RecordingLimiter()


@pytest.fixture
def credentials(fcm_fake: FakeFcm, tmp_path: Path) -> Path:
    return fcm_fake.write_service_account(tmp_path / "service-account.json", PROJECT)


def fcm_channel(
    fake: FakeFcm, credentials: Path, limiter: RecordingLimiter, *, timeout: float = 5.0
) -> PushChannel:
    sender = FcmSender(credentials, PROJECT, base_url=fake.url, limiter=limiter, timeout=timeout)
    return PushChannel(fcm=sender, webpush=None)


@pytest.fixture
def vapid() -> VapidKeys:
    return make_vapid_keys()


def webpush_channel(
    vapid: VapidKeys, limiter: RecordingLimiter, *, timeout: float = 5.0
) -> PushChannel:
    sender = WebPushSender(
        vapid.private_key,
        "mailto:loyalty-ops@example.com",
        limiter=limiter,
        timeout=timeout,
        allow_insecure=True,  # the fake listens on http://127.0.0.1
    )
    return PushChannel(fcm=None, webpush=sender)


# --- FCM -------------------------------------------------------------------------------


def test_fcm_sends_after_one_verified_oauth_exchange_and_reuses_the_token(
    fcm_fake: FakeFcm, credentials: Path, limiter: RecordingLimiter
) -> None:
    """One JWT-bearer exchange, verified by the token endpoint, serves every following send."""
    # Given a push channel with FCM credentials whose token_uri is the fake's
    channel = fcm_channel(fcm_fake, credentials, limiter)
    # When it sends to three devices
    outcomes = channel.send_batch(
        [push_message(f"device-{i}", "fcm", delivery_id=i) for i in (1, 2, 3)]
    )
    # Then each receipt carries FCM's message name
    assert all(isinstance(o, Receipt) for o in outcomes)
    names = [m.name for m in fcm_fake.messages]
    assert names == [o.provider_message_id for o in outcomes if isinstance(o, Receipt)]
    assert all(n.startswith(f"projects/{PROJECT}/messages/") for n in names)
    # And the token endpoint saw one JWT-bearer grant, whose signature verified
    assert len(fcm_fake.token_requests) == 1
    grant = fcm_fake.token_requests[0]
    assert grant.verified
    assert grant.client_email == f"loyalcast-push@{PROJECT}.iam.gserviceaccount.com"
    assert grant.scope == "https://www.googleapis.com/auth/firebase.messaging"
    assert len(fcm_fake.calls("POST", "^/token$")) == 1
    # And every send used that one token and passed the FCM spec
    sends = fcm_fake.calls("POST", "/messages:send$")
    assert len(sends) == 3
    assert len({r.headers["Authorization"] for r in sends}) == 1
    assert fcm_fake.invalid == []
    # And the message holds the title, body and delivery id
    assert fcm_fake.messages[1].message == {
        "token": "device-2",
        "notification": {"title": TITLE, "body": BODY},
        "data": {"delivery_id": "2"},
    }
    assert limiter.waits == 3
    channel.close()


def test_fcm_fake_checks_requests_against_the_spec(fcm_fake: FakeFcm, credentials: Path) -> None:
    """The spec validation is live: a data value that is not a string is refused."""
    # Given a valid access token from the fake's token endpoint
    sender = FcmSender(credentials, PROJECT, base_url=fcm_fake.url)
    sender.send("device-1", title=TITLE, body=BODY, data={"delivery_id": "1"})
    token = fcm_fake.requests[-1].headers["Authorization"]
    # When a request breaks the spec (FCM data values are strings)
    response = requests.post(
        sender.endpoint,
        json={"message": {"token": "device-1", "data": {"delivery_id": 1}}},
        headers={"Authorization": token},
        timeout=5,
    )
    # Then the fake answers 400 and records it invalid
    assert response.status_code == 400
    assert len(fcm_fake.invalid) == 1
    assert "delivery_id" in str(fcm_fake.invalid[0].error)


def test_fcm_expired_access_token_is_exchanged_again_once(
    fcm_fake: FakeFcm, credentials: Path, limiter: RecordingLimiter
) -> None:
    """An ACCESS_TOKEN_EXPIRED answer gets one fresh exchange and one retry."""
    # Given a sender that already holds a token, which FCM then considers expired
    channel = fcm_channel(fcm_fake, credentials, limiter)
    channel.send(push_message("device-1", "fcm"))
    fcm_fake.expire_tokens()
    # When it sends again
    receipt = channel.send(push_message("device-2", "fcm"))
    # Then it exchanged a second JWT and the message went out
    assert receipt.provider_message_id == fcm_fake.messages[-1].name
    assert [t.verified for t in fcm_fake.token_requests] == [True, True]
    assert fcm_fake.invalid == []


def test_fcm_unregistered_token_is_an_invalid_recipient(
    fcm_fake: FakeFcm, credentials: Path, limiter: RecordingLimiter
) -> None:
    """404 UNREGISTERED means the app is gone: the worker revokes the token."""
    # Given a token FCM no longer knows
    fcm_fake.unregister("uninstalled")
    channel = fcm_channel(fcm_fake, credentials, limiter)
    # When the channel sends to it
    with pytest.raises(InvalidRecipient) as caught:
        channel.send(push_message("uninstalled", "fcm"))
    # Then it is an invalid recipient with FCM's code
    assert caught.value.code == "UNREGISTERED"
    assert fcm_fake.invalid == []


def test_fcm_invalid_argument_is_the_recipient_only_when_it_names_the_token(
    fcm_fake: FakeFcm, credentials: Path, limiter: RecordingLimiter
) -> None:
    """INVALID_ARGUMENT on message.token revokes the token; on the payload it does not."""
    # Given a malformed token, and a payload FCM will refuse
    fcm_fake.invalidate("garbage-token")
    channel = fcm_channel(fcm_fake, credentials, limiter)
    # When the channel sends to the malformed token
    with pytest.raises(InvalidRecipient) as on_token:
        channel.send(push_message("garbage-token", "fcm"))
    # And when FCM refuses the next message for some other argument
    fcm_fake.fail_next(400, "INVALID_ARGUMENT")
    with pytest.raises(PermanentDeliveryError) as on_payload:
        channel.send(push_message("device-1", "fcm"))
    # Then only the first is an invalid recipient
    assert on_token.value.code == "INVALID_ARGUMENT"
    assert not isinstance(on_payload.value, InvalidRecipient)


def test_fcm_bare_404_never_revokes_the_token(
    fcm_fake: FakeFcm, credentials: Path, limiter: RecordingLimiter
) -> None:
    """A 404 without Google's error shape (a wrong base URL, a proxy) is not the token's fault."""
    # Given something answering the next send with a bare 404
    fcm_fake.script("send", Scripted(404, None))
    channel = fcm_channel(fcm_fake, credentials, limiter)
    # When the channel sends
    with pytest.raises(PermanentDeliveryError) as caught:
        channel.send(push_message("device-1", "fcm"))
    # Then it is permanent for this message but the device is kept
    assert not isinstance(caught.value, InvalidRecipient)
    assert caught.value.code == "404"


def test_fcm_quota_exceeded_is_transient_and_blocks_the_limiter(
    fcm_fake: FakeFcm, credentials: Path, limiter: RecordingLimiter
) -> None:
    """429 QUOTA_EXCEEDED carries Retry-After and pauses every worker for it."""
    # Given FCM answering the next send 429 with Retry-After: 30
    fcm_fake.fail_next(429, "QUOTA_EXCEEDED", retry_after=30)
    channel = fcm_channel(fcm_fake, credentials, limiter)
    # When the channel sends
    with pytest.raises(TransientDeliveryError) as caught:
        channel.send(push_message("device-1", "fcm"))
    # Then the error says when to retry and the shared limiter is blocked that long
    assert caught.value.retry_after == 30
    assert caught.value.code == "QUOTA_EXCEEDED"
    assert limiter.blocks == [30]


@pytest.mark.parametrize(
    ("status", "code", "retry_after"), [(503, "UNAVAILABLE", 5), (500, "INTERNAL", None)]
)
def test_fcm_server_errors_are_transient(
    fcm_fake: FakeFcm,
    credentials: Path,
    limiter: RecordingLimiter,
    status: int,
    code: str,
    retry_after: float | None,
) -> None:
    """503 UNAVAILABLE and 500 INTERNAL are transient, with Retry-After when given."""
    # Given FCM failing the next send
    fcm_fake.fail_next(status, code, retry_after=retry_after)
    channel = fcm_channel(fcm_fake, credentials, limiter)
    # When the channel sends
    with pytest.raises(TransientDeliveryError) as caught:
        channel.send(push_message("device-1", "fcm"))
    # Then it is transient, sent once, and no other worker is paused
    assert caught.value.retry_after == retry_after
    assert len(fcm_fake.calls("POST", "/messages:send$")) == 1
    assert limiter.blocks == []


def test_fcm_timeout_is_transient(
    own_fcm: FakeFcm, tmp_path: Path, limiter: RecordingLimiter
) -> None:
    """A send FCM holds past the timeout is transient and is not retried below us."""
    # Given a sender with a 0.5 s timeout and FCM answering after 2 s
    fcm_fake = own_fcm
    credentials = fcm_fake.write_service_account(tmp_path / "sa.json", PROJECT)
    channel = fcm_channel(fcm_fake, credentials, limiter, timeout=0.5)
    channel.send(push_message("device-0", "fcm"))  # the token exchange is done
    fcm_fake.slow_next(2.0)
    started = time.monotonic()
    # When the channel sends
    with pytest.raises(TransientDeliveryError) as caught:
        channel.send(push_message("device-1", "fcm"))
    # Then it gave up after about the timeout, having posted once, and says FCM may have it
    assert time.monotonic() - started < 1.5
    assert caught.value.ambiguous
    assert len(fcm_fake.calls("POST", "/messages:send$")) == 2


def test_fcm_refused_service_account_key_is_permanent(
    fcm_fake: FakeFcm, tmp_path: Path, limiter: RecordingLimiter
) -> None:
    """A key the token endpoint refuses is permanent and names the credentials file."""
    # Given a service-account file whose key was rotated away
    stale = fcm_fake.write_service_account(tmp_path / "stale.json", PROJECT, known=False)
    channel = fcm_channel(fcm_fake, stale, limiter)
    # When the channel sends
    with pytest.raises(PermanentDeliveryError) as caught:
        channel.send(push_message("device-1", "fcm"))
    # Then the error names the credentials, the JWT was refused and nothing was sent
    assert caught.value.code == "credentials"
    assert str(stale) in str(caught.value)
    assert not isinstance(caught.value, InvalidRecipient)
    assert [(t.verified, t.error) for t in fcm_fake.token_requests] == [
        (False, "Invalid JWT Signature.")
    ]
    assert fcm_fake.calls("POST", "/messages:send$") == []


def test_fcm_credentials_of_another_project_are_permanent(
    fcm_fake: FakeFcm, tmp_path: Path, limiter: RecordingLimiter
) -> None:
    """403 from FCM (the account may not send for the project) is permanent, not the token."""
    # Given credentials of another project, configured for ours
    other = fcm_fake.write_service_account(tmp_path / "other.json", "another-project")
    channel = fcm_channel(fcm_fake, other, limiter)
    # When the channel sends
    with pytest.raises(PermanentDeliveryError) as caught:
        channel.send(push_message("device-1", "fcm"))
    # Then it is a permanent credentials error naming the file and the project
    assert not isinstance(caught.value, InvalidRecipient)
    assert caught.value.code == "PERMISSION_DENIED"
    assert str(other) in str(caught.value)
    assert PROJECT in str(caught.value)


def test_fcm_unreachable_token_endpoint_is_transient(
    fcm_fake: FakeFcm, credentials: Path, limiter: RecordingLimiter
) -> None:
    """When the OAuth token endpoint cannot be reached, the send is transient."""
    # Given credentials whose token endpoint nobody listens on
    info = json.loads(credentials.read_text())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        info["token_uri"] = f"http://127.0.0.1:{probe.getsockname()[1]}/token"
    credentials.write_text(json.dumps(info))
    channel = fcm_channel(fcm_fake, credentials, limiter, timeout=1.0)
    # When the channel sends
    with pytest.raises(TransientDeliveryError) as caught:
        channel.send(push_message("device-1", "fcm"))
    # Then the error says the token endpoint was unreachable, and nothing was sent
    assert caught.value.code == "token_endpoint"
    assert not caught.value.ambiguous
    assert fcm_fake.requests == []


# --- Web Push --------------------------------------------------------------------------


def test_webpush_payload_is_encrypted_signed_and_decrypted_exactly(
    webpush_fake: FakeWebPushService, vapid: VapidKeys, limiter: RecordingLimiter
) -> None:
    """The browser decrypts exactly the title, body and delivery id; VAPID and TTL hold."""
    # Given a subscription made with our VAPID public key
    subscription = webpush_fake.subscribe(application_server_key=vapid.public_key)
    channel = webpush_channel(vapid, limiter)
    # When the channel sends to it
    receipt = channel.send(webpush_message(subscription, delivery_id=7))
    # Then the fake decrypted the exact payload, with our TTL
    [push] = webpush_fake.received
    assert push.payload == {"title": TITLE, "body": BODY, "delivery_id": "7"}
    assert push.ttl == DEFAULT_TTL
    assert push.endpoint == subscription["endpoint"]
    # And the receipt is the push service's Location, and every check passed
    assert receipt.provider_message_id == push.location
    assert webpush_fake.invalid == []
    assert limiter.waits == 1
    channel.close()


@pytest.mark.parametrize("gone", ["expired", "unknown"])
def test_webpush_gone_subscription_is_an_invalid_recipient(
    webpush_fake: FakeWebPushService, vapid: VapidKeys, limiter: RecordingLimiter, gone: str
) -> None:
    """410 Gone (unsubscribed) and 404 (never existed) mean revoke the subscription."""
    # Given a subscription that expired, or an endpoint the service never issued
    subscription = webpush_fake.subscribe()
    if gone == "expired":
        webpush_fake.expire(subscription["endpoint"])
    else:
        subscription = {**subscription, "endpoint": f"{webpush_fake.url}/push/nope"}
    channel = webpush_channel(vapid, limiter)
    # When the channel sends to it
    with pytest.raises(InvalidRecipient) as caught:
        channel.send(webpush_message(subscription))
    # Then it is an invalid recipient, and the request itself was valid
    assert caught.value.code == ("410" if gone == "expired" else "404")
    assert webpush_fake.invalid == []


def test_webpush_rate_limit_is_transient_and_blocks_the_limiter(
    webpush_fake: FakeWebPushService, vapid: VapidKeys, limiter: RecordingLimiter
) -> None:
    """429 with Retry-After is transient and pauses every worker for that long."""
    # Given a push service answering the next push 429, Retry-After: 12
    webpush_fake.rate_limit_next(12)
    channel = webpush_channel(vapid, limiter)
    # When the channel sends
    with pytest.raises(TransientDeliveryError) as caught:
        channel.send(webpush_message(webpush_fake.subscribe()))
    # Then the error carries the wait and the limiter is blocked for it
    assert caught.value.retry_after == 12
    assert limiter.blocks == [12]


@pytest.mark.parametrize("status", [500, 503])
def test_webpush_server_errors_are_transient(
    webpush_fake: FakeWebPushService, vapid: VapidKeys, limiter: RecordingLimiter, status: int
) -> None:
    """A 5xx from the push service is transient."""
    # Given a push service failing the next push
    webpush_fake.fail_next(status)
    channel = webpush_channel(vapid, limiter)
    # When the channel sends, then it is transient and nobody else is paused
    with pytest.raises(TransientDeliveryError):
        channel.send(webpush_message(webpush_fake.subscribe()))
    assert limiter.blocks == []


def test_webpush_timeout_is_transient(
    own_webpush: FakeWebPushService, vapid: VapidKeys, limiter: RecordingLimiter
) -> None:
    """A push held past the timeout is transient."""
    # Given a sender with a 0.5 s timeout and a push service answering after 2 s
    webpush_fake = own_webpush
    webpush_fake.slow_next(2.0)
    channel = webpush_channel(vapid, limiter, timeout=0.5)
    started = time.monotonic()
    # When the channel sends
    with pytest.raises(TransientDeliveryError) as caught:
        channel.send(webpush_message(webpush_fake.subscribe()))
    # Then it gave up after about the timeout, and says the service may have it
    assert time.monotonic() - started < 1.5
    assert caught.value.ambiguous


def test_webpush_unreachable_service_is_transient_and_not_ambiguous(
    webpush_fake: FakeWebPushService, vapid: VapidKeys, limiter: RecordingLimiter
) -> None:
    """A refused connection is transient, and the push certainly was not delivered."""
    # Given a subscription whose push service nobody listens on
    subscription = webpush_fake.subscribe()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        subscription["endpoint"] = f"http://127.0.0.1:{probe.getsockname()[1]}/push/x"
    channel = webpush_channel(vapid, limiter)
    # When the channel sends, then it is transient and not ambiguous
    with pytest.raises(TransientDeliveryError) as caught:
        channel.send(webpush_message(subscription))
    assert not caught.value.ambiguous
    assert caught.value.code == "network"


@pytest.mark.parametrize("status", [400, 401, 403, 413])
def test_webpush_refusals_are_permanent(
    webpush_fake: FakeWebPushService, vapid: VapidKeys, limiter: RecordingLimiter, status: int
) -> None:
    """400, 401, 403 and 413 from the push service are permanent, not the recipient."""
    # Given a push service refusing the next push
    webpush_fake.fail_next(status)
    channel = webpush_channel(vapid, limiter)
    # When the channel sends
    with pytest.raises(PermanentDeliveryError) as caught:
        channel.send(webpush_message(webpush_fake.subscribe()))
    # Then it is permanent and the subscription is kept
    assert not isinstance(caught.value, InvalidRecipient)
    assert caught.value.code == str(status)


def test_webpush_vapid_key_the_subscription_does_not_know_is_permanent(
    webpush_fake: FakeWebPushService, vapid: VapidKeys, limiter: RecordingLimiter
) -> None:
    """A subscription made with another application server key refuses our VAPID key (403)."""
    # Given a subscription created with a different VAPID public key
    subscription = webpush_fake.subscribe(application_server_key=make_vapid_keys().public_key)
    channel = webpush_channel(vapid, limiter)
    # When the channel sends
    with pytest.raises(PermanentDeliveryError) as caught:
        channel.send(webpush_message(subscription))
    # Then it is permanent with 403, names the VAPID key, and nothing was received
    assert not isinstance(caught.value, InvalidRecipient)
    assert caught.value.code == "403"
    assert "VAPID_PRIVATE_KEY" in str(caught.value)
    assert webpush_fake.received == []
    assert [str(r.error).startswith("403: VAPID key") for r in webpush_fake.invalid] == [True]


def test_webpush_malformed_vapid_settings_are_refused_at_construction() -> None:
    """A VAPID key or subject that cannot work fails when the sender is made, not per message."""
    # When the sender is made with a key that is not a P-256 key, then it raises
    with pytest.raises(ValueError, match="VAPID_PRIVATE_KEY"):
        WebPushSender("bm90LWEta2V5", "mailto:ops@example.com")
    # And with a subject that is not a contact URL
    with pytest.raises(ValueError, match="VAPID_SUBJECT"):
        WebPushSender(make_vapid_keys().private_key, "ops@example.com")
    with pytest.raises(ValueError, match="VAPID_SUBJECT"):
        WebPushSender(make_vapid_keys().private_key, "mailto:ops")


def test_webpush_pem_vapid_key_is_accepted(
    webpush_fake: FakeWebPushService, vapid: VapidKeys, limiter: RecordingLimiter
) -> None:
    """VAPID_PRIVATE_KEY may be a PEM block; it signs as the same key."""
    # Given a sender made from the PEM form of the key
    sender = WebPushSender(vapid.private_pem, "https://loyalty.example.com", allow_insecure=True)
    subscription = webpush_fake.subscribe(application_server_key=vapid.public_key)
    # When it sends, then the subscription accepts its VAPID key
    sender.send(subscription["endpoint"], subscription["keys"], title="t", body="b", data={})
    assert sender.application_server_key == vapid.public_key
    assert [p.payload for p in webpush_fake.received] == [{"title": "t", "body": "b"}]


@pytest.mark.parametrize(
    ("endpoint", "keys"),
    [
        ("http://push.example.net/sub/1", None),  # not https
        (None, {"p256dh": "AAAA", "auth": "AAAAAAAAAAAAAAAAAAAAAA"}),  # not a P-256 point
        (None, {"p256dh": "x"}),  # no auth secret
    ],
)
def test_webpush_unusable_subscription_is_an_invalid_recipient(
    webpush_fake: FakeWebPushService,
    vapid: VapidKeys,
    limiter: RecordingLimiter,
    endpoint: str | None,
    keys: dict[str, str] | None,
) -> None:
    """A subscription that is not https or whose keys are broken is revoked, never posted."""
    # Given a subscription with a bad endpoint or bad keys
    subscription = webpush_fake.subscribe()
    subscription = {
        "endpoint": endpoint or subscription["endpoint"],
        "keys": keys or subscription["keys"],
    }
    # (the fake's own endpoint is http: allowed when only the keys are wrong)
    sender = WebPushSender(
        vapid.private_key, "mailto:ops@example.com", allow_insecure=endpoint is None
    )
    channel = PushChannel(fcm=None, webpush=sender)
    # When the channel sends, then it is an invalid recipient and nothing was posted
    with pytest.raises(InvalidRecipient):
        channel.send(webpush_message(subscription))
    assert webpush_fake.requests == []


# --- the channel -----------------------------------------------------------------------


def test_push_channel_dispatches_each_message_by_kind(
    fcm_fake: FakeFcm,
    credentials: Path,
    webpush_fake: FakeWebPushService,
    vapid: VapidKeys,
    limiter: RecordingLimiter,
) -> None:
    """One batch mixes app and browser devices; outcomes come back in order."""
    # Given a channel with both senders, and an app that was uninstalled
    fcm = FcmSender(credentials, PROJECT, base_url=fcm_fake.url, limiter=limiter)
    web = WebPushSender(vapid.private_key, "mailto:ops@example.com", allow_insecure=True)
    channel = PushChannel(fcm=fcm, webpush=web)
    fcm_fake.unregister("uninstalled")
    batch = [
        push_message("phone", "fcm", delivery_id=1),
        webpush_message(webpush_fake.subscribe(), delivery_id=2),
        push_message("uninstalled", "fcm", delivery_id=3),
    ]
    # When it sends the batch
    outcomes = channel.send_batch(batch)
    # Then each went to its provider, and the uninstalled app is an invalid recipient
    assert isinstance(channel, Channel)
    assert (channel.name, channel.live) == ("push", True)
    assert [Receipt, Receipt, InvalidRecipient] == [type(o) for o in outcomes]
    assert [m.message["token"] for m in fcm_fake.messages] == ["phone"]
    assert [p.payload["delivery_id"] for p in webpush_fake.received] == ["2"]
    channel.close()


@pytest.mark.parametrize(
    ("kind", "setting"),
    [("fcm", "GOOGLE_APPLICATION_CREDENTIALS"), ("webpush", "VAPID_PRIVATE_KEY")],
)
def test_a_kind_without_a_sender_is_permanent(kind: str, setting: str) -> None:
    """A device kind whose provider is not configured fails permanently, naming the setting."""
    # Given a channel with neither sender configured
    channel = PushChannel(fcm=None, webpush=None)
    keys = {"p256dh": "k", "auth": "a"}
    # When it sends to a device of that kind
    with pytest.raises(PermanentDeliveryError) as caught:
        channel.send(push_message("device", kind, webpush_keys=keys))
    # Then the error names the missing configuration and does not revoke the device
    assert not isinstance(caught.value, InvalidRecipient)
    assert setting in str(caught.value)


def test_an_unknown_push_kind_is_permanent() -> None:
    """A message without a known push_kind is refused permanently."""
    # Given a channel, and a message whose device kind is missing
    channel = PushChannel(fcm=None, webpush=None)
    # When it is sent, then it fails permanently with the push_kind code
    with pytest.raises(PermanentDeliveryError) as caught:
        channel.send(push_message("device", None))
    assert caught.value.code == "push_kind"
