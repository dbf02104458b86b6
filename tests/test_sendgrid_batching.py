"""SendGrid batching: messages rendered per member share one request through substitutions.

Each recipient must read exactly its own rendered subject, HTML and text: the
fake applies the substitutions as SendGrid does and records what each
recipient gets, and every request is validated against the official spec.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels import Message, Receipt
from channels.fakes.sendgrid import DEFAULT_API_KEY, FakeSendGrid
from channels.sendgrid import SendGridEmailChannel
from channels.sendgrid_body import MAX_SUBSTITUTION_BYTES

from .test_channel_sendgrid import SENDER, message, new_fake, recipients, sends

pytestmark = [pytest.mark.usefixtures("provider_specs")]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeSendGrid]:
    provider = new_fake()
    with provider:
        yield provider


@pytest.fixture
def fake(server: FakeSendGrid) -> Iterator[FakeSendGrid]:
    server.reset()
    yield server
    assert server.invalid == []


@pytest.fixture
def channel(fake: FakeSendGrid) -> SendGridEmailChannel:
    return SendGridEmailChannel(DEFAULT_API_KEY, SENDER, host=fake.url)


def personal(delivery_id: int, name: str, points: int, **kwargs: str) -> Message:
    """A mail rendered for one member: a long shared layout around a personal middle."""
    layout = "<html><head><style>p{margin:0}</style></head><body>"
    sent = message(delivery_id, f"{name.lower()}@example.com", **kwargs)
    return replace(
        sent,
        parts={
            "subject": f"{name}, {points} points are waiting",
            "html": f"{layout}<p>Hi {name},</p><p>you have {points} points.</p></body></html>",
            "text": f"Hi {name},\nyou have {points} points.\n-- Rewards",
        },
    )


def received(fake: FakeSendGrid) -> dict[str, tuple[str, str | None, str | None]]:
    return {m.to: (m.subject, m.html, m.text) for m in fake.mails}


def test_mails_rendered_per_member_share_one_request_and_each_reads_its_own(
    fake: FakeSendGrid, channel: SendGridEmailChannel
) -> None:
    """Three members' own mails are one request; each recipient gets exactly its rendering."""
    # Given three mails of one campaign, each rendered for its member
    messages = [personal(1, "Ann", 120), personal(2, "Bob", 80), personal(3, "Cat", 1200)]
    # When they are sent
    outcomes = channel.send_batch(messages)
    # Then one request carried them, in message order
    (body,) = sends(fake)
    assert recipients(body) == [m.to for m in messages]
    # And the shared layout went once, with each member's own text substituted
    assert body["content"][1]["value"].startswith("<html><head><style>")
    assert all("substitutions" in p for p in body["personalizations"])
    # And each recipient reads its own subject, HTML and text
    assert received(fake) == {
        m.to: (m.parts["subject"], m.parts["html"], m.parts["text"]) for m in messages
    }
    # And every message has the request's receipt, in order
    assert [type(o) for o in outcomes] == [Receipt] * 3


def test_other_campaigns_and_categories_go_in_their_own_requests(
    fake: FakeSendGrid, channel: SendGridEmailChannel
) -> None:
    """SendGrid categories are set per request: campaign and category split the batch."""
    messages = [
        personal(1, "Ann", 1),
        personal(2, "Bob", 2, campaign="winter"),
        personal(3, "Cat", 3),
        personal(4, "Dan", 4, category="marketing", unsubscribe="https://l.example/u/x"),
    ]
    outcomes = channel.send_batch(messages)
    assert [recipients(b) for b in sends(fake)] == [
        ["ann@example.com", "cat@example.com"],
        ["bob@example.com"],
        ["dan@example.com"],
    ]
    ids = [o.provider_message_id for o in outcomes if isinstance(o, Receipt)]
    assert ids[0] == ids[2] != ids[1]
    assert received(fake)["dan@example.com"][0] == "Dan, 4 points are waiting"


def test_a_message_over_the_substitution_cap_is_sent_alone_whole(
    fake: FakeSendGrid, channel: SendGridEmailChannel
) -> None:
    """SendGrid takes 10,000 bytes of substitutions per personalization: a bigger one goes alone."""
    # Given one member whose own text is larger than the cap allows
    big = personal(2, "Bob", 80)
    long_text = "é" * (MAX_SUBSTITUTION_BYTES // 2)  # 2 bytes each in UTF-8
    big = replace(big, parts={**big.parts, "text": long_text})
    messages = [personal(1, "Ann", 120), big, personal(3, "Cat", 5)]
    # When the three are sent
    channel.send_batch(messages)
    # Then the two others shared a request and the big one went alone, without substitutions
    bodies = sends(fake)
    assert [recipients(b) for b in bodies] == [
        ["ann@example.com", "cat@example.com"],
        ["bob@example.com"],
    ]
    assert "substitutions" not in bodies[1]["personalizations"][0]
    assert received(fake)["bob@example.com"][2] == long_text


def test_a_tag_never_collides_with_a_members_text(
    fake: FakeSendGrid, channel: SendGridEmailChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member whose text holds the tag the first token would make gets a fresh token."""
    tokens = iter(["0123456789abcdef", "fedcba9876543210"])
    monkeypatch.setattr("channels.sendgrid_body.secrets.token_hex", lambda _n: next(tokens))
    # Given a member whose own text is the first token's tag
    messages = [personal(1, "Ann", 1), personal(2, "-lc-text-0123456789abcdef-", 2)]
    # When sent
    channel.send_batch(messages)
    # Then the second token was used and each reads its own text
    (body,) = sends(fake)
    assert "-lc-text-fedcba9876543210-" in body["content"][0]["value"]
    assert received(fake) == {
        m.to: (m.parts["subject"], m.parts["html"], m.parts["text"]) for m in messages
    }


_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(bodies=st.lists(st.tuples(_text, _text), min_size=1, max_size=6))
def test_any_renderings_reach_each_recipient_exactly(
    server: FakeSendGrid, bodies: list[tuple[str, str]]
) -> None:
    """Whatever the members' texts share or not, each recipient reads exactly its own."""
    server.reset()
    channel = SendGridEmailChannel(DEFAULT_API_KEY, SENDER, host=server.url)
    messages = [
        replace(
            message(i, f"m{i}@example.com"),
            parts={"subject": f"s{i}", "html": f"<p>{h}</p>", "text": f"t{t}"},
        )
        for i, (h, t) in enumerate(bodies)
    ]
    outcomes = channel.send_batch(messages)
    assert all(isinstance(o, Receipt) for o in outcomes)
    assert len(sends(server)) == 1
    assert received(server) == {
        m.to: (m.parts["subject"], m.parts["html"], m.parts["text"]) for m in messages
    }
    assert server.invalid == []
