"""Unsubscribe links: GET shows a page and changes nothing; POST (one-click or button) opts out."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from store import Consent, ConsentEvent

from .support import add_member
from .test_api import start_api

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
def app(database_url, tmp_path):
    with start_api(database_url, tmp_path) as a:
        yield a


def member(app, **fields) -> int:
    with app.sessions.begin() as s:
        return add_member(s, consents={"email": "opted_in", "sms": "opted_in"}, **fields).id


def consent(app, member_id, channel="email") -> tuple:
    """(status, source) of the consent and the (status, source, detail) of its events."""
    with app.sessions() as s:
        row = s.get(Consent, (member_id, channel))
        events = s.execute(
            select(ConsentEvent.status, ConsentEvent.source, ConsentEvent.detail).where(
                ConsentEvent.member_id == member_id, ConsentEvent.channel == channel
            )
        ).all()
    return (row.status, row.source), events


def test_get_shows_a_confirmation_page_and_changes_nothing(app):
    """Mail scanners follow links: GET names the channel and address and offers a button."""
    # Given a member opted in to email
    member_id = member(app, email="ada@example.com")
    before = app.snapshot()
    # When the link is opened
    response = app.client.get(f"/unsubscribe/{app.token(member_id, 'email')}")
    # Then a page with a POST form is shown, and nothing changed
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<html lang="en">' in response.text
    assert '<form method="post">' in response.text
    assert '<button type="submit">Unsubscribe</button>' in response.text
    assert "a•••@example.com" in response.text
    assert "ada@example.com" not in response.text
    assert response.headers["referrer-policy"] == "no-referrer"
    assert before == app.snapshot()


def test_one_click_post_opts_out(app):
    """An RFC 8058 one-click POST opts the member out of the token's channel."""
    # Given a member opted in to email and SMS
    member_id = member(app)
    # When the mail client posts List-Unsubscribe=One-Click
    response = app.client.post(f"/unsubscribe/{app.token(member_id, 'email')}", data=ONE_CLICK)
    # Then email is opted out with an audit row, SMS is untouched, and a page says so
    assert response.status_code == 200
    assert "You are unsubscribed" in response.text
    assert consent(app, member_id) == (
        ("opted_out", "unsubscribe-link"),
        [("opted_out", "unsubscribe-link", "one-click (RFC 8058)")],
    )
    assert consent(app, member_id, "sms")[0][0] == "opted_in"


def test_one_click_post_as_multipart_opts_out(app):
    """RFC 8058 suggests multipart/form-data; that works too."""
    member_id = member(app)
    response = app.client.post(
        f"/unsubscribe/{app.token(member_id, 'email')}",
        files={"List-Unsubscribe": (None, "One-Click")},
    )
    assert response.status_code == 200
    assert consent(app, member_id)[1][0][2] == "one-click (RFC 8058)"


def test_the_page_button_opts_out_once_however_often_pressed(app):
    """The confirmation page's button opts out; pressing it again records nothing new."""
    # Given a member with an SMS unsubscribe link
    member_id = member(app, phone="+14155550123")
    path = f"/unsubscribe/{app.token(member_id, 'sms')}"
    # When the page's form is submitted twice
    replies = [app.client.post(path, data={"confirm": "yes"}) for _ in range(2)]
    # Then both answer the unsubscribed page, and there is one change
    assert [r.status_code for r in replies] == [200, 200]
    assert "••• 0123" in replies[0].text
    assert consent(app, member_id, "sms") == (
        ("opted_out", "unsubscribe-link"),
        [("opted_out", "unsubscribe-link", "confirmation page")],
    )


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_tampered_token_is_404_and_changes_nothing(app, method):
    """A token with any change, or from another key, gets the 404 page."""
    # Given a member and a link whose token was altered
    member_id = member(app)
    token = app.token(member_id, "email")
    tampered = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    before = app.snapshot()
    # When it is opened or posted
    responses = [
        app.client.request(
            method, f"/unsubscribe/{bad}", data=ONE_CLICK if method == "POST" else None
        )
        for bad in (tampered, "garbage", "a" * 500)
    ]
    # Then each is a 404 page and nothing changed
    assert [r.status_code for r in responses] == [404, 404, 404]
    assert "not valid" in responses[0].text
    assert before == app.snapshot()


def test_a_link_for_a_member_that_no_longer_exists_is_404(app):
    """A valid token naming a member who is gone changes nothing."""
    before = app.snapshot()
    response = app.client.post(f"/unsubscribe/{app.token(987654, 'email')}", data=ONE_CLICK)
    assert response.status_code == 404
    assert before == app.snapshot()
