"""The templates package: public surface, loading, checking, and the built-ins."""

from __future__ import annotations

import datetime as dt
import pickle
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

import templates
from templates import CHANNEL_PARTS, Renderer, TemplateError, load_templates

BUILTIN_DIR = Path(templates.__file__).parent / "builtin"
BUILTIN_NAMES = ("winter-double-points", "welcome-1")

# GSM 03.38: the basic alphabet costs one septet a character, the extension
# table two (an escape and the character).
GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = set("^{}\\[~]|€\f")


def gsm7_septets(text: str) -> int:
    """Return the SMS length of ``text`` in GSM-7 septets; fail if it needs UCS-2."""
    outside = sorted({char for char in text if char not in GSM7_BASIC | GSM7_EXTENSION})
    assert outside == [], f"not GSM-7: {outside!r}"
    return sum(2 if char in GSM7_EXTENSION else 1 for char in text)


def write(directory: Path, relative: str, text: str) -> Path:
    path = directory / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def member_context(locale: str = "en_US", time_zone: str = "America/New_York") -> dict[str, Any]:
    """A render context shaped as the package docstring promises."""
    return {
        "member": {
            "id": 4711,
            "external_id": "M-0004711",
            "name": "Maximilian Schneider",
            "first_name": "Maximilian",
            "email": "max@example.com",
            "phone": "+14155550123",
            "tier": "platinum",
            "points_balance": 123456,
            "locale": locale,
            "time_zone": time_zone,
            "enrolled_at": dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.UTC),
            "purchases_count": 0,
            "attributes": {"favourite_store": "Downtown"},
        },
        "campaign": {"name": "winter-double-points", "category": "marketing"},
        "locale": locale,
        "time_zone": time_zone,
    }


class _HtmlChecker(HTMLParser):
    """Records a document's doctype and every tag that is closed out of order."""

    VOID = frozenset({"meta", "br", "img", "hr", "input", "link"})

    def __init__(self) -> None:
        super().__init__()
        self.doctype = ""
        self.open: list[str] = []
        self.mismatched: list[str] = []

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open.pop() != tag:
            self.mismatched.append(tag)


# --- public surface -----------------------------------------------------------------


def test_public_surface_is_exactly_the_documented_names() -> None:
    """The package exports the four documented names and nothing else."""
    # Given / When the package's declared surface
    exported = sorted(templates.__all__)

    # Then it is the documented API
    assert exported == ["CHANNEL_PARTS", "Renderer", "TemplateError", "load_templates"]


def test_channel_parts_are_the_documented_parts_and_read_only() -> None:
    """Each channel has its documented parts, and the table cannot be changed."""
    # Given / When / Then
    expected = {
        "sms": ("text",),
        "email": ("subject", "html", "text"),
        "push": ("title", "body"),
        "direct_mail": ("headline", "message"),
    }
    assert expected == dict(CHANNEL_PARTS)
    with pytest.raises(TypeError):
        CHANNEL_PARTS["fax"] = ("page",)  # type: ignore[index]


def test_template_error_names_template_and_line_and_survives_pickling() -> None:
    """TemplateError reads "file, line N: problem", and pickles with its fields."""
    # Given an error with a line and one without
    with_line = TemplateError("winter-double-points/email.subject.j2", 3, "unexpected '}'")
    without_line = TemplateError("promo", None, "missing template files")

    # When one is sent through pickle
    copy = pickle.loads(pickle.dumps(with_line))  # noqa: S301 - our own bytes

    # Then the message and fields are as documented
    assert str(with_line) == "winter-double-points/email.subject.j2, line 3: unexpected '}'"
    assert str(without_line) == "promo: missing template files"
    assert (with_line.template, with_line.line, with_line.problem) == (
        copy.template,
        copy.line,
        copy.problem,
    )


# --- loading ------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtins_load_every_part_of_every_channel(name: str) -> None:
    """A built-in template loads the source of every part of every channel."""
    # Given / When all channels of a built-in are loaded
    sources = load_templates(name, CHANNEL_PARTS)

    # Then every part is there, read verbatim from its file
    assert {channel: set(parts) for channel, parts in CHANNEL_PARTS.items()} == {
        channel: set(parts) for channel, parts in sources.items()
    }
    expected = (BUILTIN_DIR / name / "email.subject.j2").read_text(encoding="utf-8")
    assert expected == sources["email"]["subject"]


def test_load_only_the_requested_channels_once_each() -> None:
    """Only the channels asked for are loaded; a repeated channel is read once."""
    # Given / When
    sources = load_templates("welcome-1", ["push", "sms", "push"])

    # Then
    assert list(sources) == ["push", "sms"]


def test_search_path_overrides_builtin_parts_file_by_file(tmp_path: Path) -> None:
    """A search-path file wins over the built-in one; parts it lacks come from built-ins."""
    # Given two directories: the first overrides the SMS, the second both SMS and push title
    first, second = tmp_path / "first", tmp_path / "second"
    write(first, "winter-double-points/sms.text.j2", "first sms")
    write(second, "winter-double-points/sms.text.j2", "second sms")
    write(second, "winter-double-points/push.title.j2", "second title")

    # When the template is loaded with both on the search path
    sources = load_templates("winter-double-points", ["sms", "push"], [first, second])

    # Then each file comes from the first directory that has it
    assert sources["sms"]["text"] == "first sms"
    assert sources["push"]["title"] == "second title"
    builtin_body = (BUILTIN_DIR / "winter-double-points/push.body.j2").read_text("utf-8")
    assert builtin_body == sources["push"]["body"]


def test_template_found_only_on_search_path(tmp_path: Path) -> None:
    """A template that is not built in loads from the search path."""
    # Given
    write(tmp_path, "flash-sale/push.title.j2", "Flash sale")
    write(tmp_path, "flash-sale/push.body.j2", "Today only")

    # When
    sources = load_templates("flash-sale", ["push"], [tmp_path])

    # Then
    assert sources == {"push": {"title": "Flash sale", "body": "Today only"}}


def test_missing_parts_are_all_named_with_where_it_looked(tmp_path: Path) -> None:
    """A missing part fails, naming every missing file and every directory searched."""
    # Given a template with its SMS but no push parts
    write(tmp_path, "flash-sale/sms.text.j2", "Flash sale today")

    # When
    with pytest.raises(TemplateError) as caught:
        load_templates("flash-sale", ["sms", "push"], [tmp_path])

    # Then
    message = str(caught.value)
    assert caught.value.template == "flash-sale"
    assert "flash-sale/push.title.j2" in message
    assert "flash-sale/push.body.j2" in message
    assert "sms.text.j2" not in message
    assert str(tmp_path) in message
    assert str(BUILTIN_DIR) in message


@pytest.mark.parametrize(
    "name",
    [
        "../builtin/welcome-1",
        "..",
        "welcome-1/../winter-double-points",
        "/etc",
        "a\\b",
        ".hidden",
        "",
        "welcome-1\n",
        "x" * 101,
    ],
)
def test_unsafe_template_names_are_refused(name: str, tmp_path: Path) -> None:
    """A name that is not a plain slug is refused before any file is looked up."""
    # Given a file an escaping name might reach
    write(tmp_path, "secret/sms.text.j2", "secret")

    # When / Then
    with pytest.raises(TemplateError, match="not a valid template name"):
        load_templates(name, ["sms"], [tmp_path / "inner"])


def test_unknown_channel_is_refused() -> None:
    """A channel outside CHANNEL_PARTS is a TemplateError listing the known ones."""
    # Given / When / Then
    known = r"unknown channel 'fax' \(known: direct_mail, email, push, sms\)"
    with pytest.raises(TemplateError, match=known):
        load_templates("welcome-1", ["fax"])


def test_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    """A template file that is not UTF-8 text fails with its name."""
    # Given
    path = tmp_path / "latin/sms.text.j2"
    path.parent.mkdir()
    path.write_bytes("Grüße".encode("latin-1"))

    # When / Then
    with pytest.raises(TemplateError, match="not UTF-8") as caught:
        load_templates("latin", ["sms"], [tmp_path])
    assert caught.value.template == "latin/sms.text.j2"


# --- checking -----------------------------------------------------------------------


def test_syntax_error_names_file_and_line() -> None:
    """A syntax error fails the check with the part's file name and the line."""
    # Given a subject whose third line has an unclosed expression
    sources = load_templates("winter-double-points", ["email"])
    sources["email"]["subject"] = "Hello\n{# fine #}\n{{ member.first_name }"

    # When
    with pytest.raises(TemplateError) as caught:
        Renderer().check("winter-double-points", sources)

    # Then
    assert str(caught.value) == "winter-double-points/email.subject.j2, line 3: unexpected '}'"
    assert caught.value.line == 3


def test_unknown_filter_fails_the_check() -> None:
    """A misspelt filter is caught when checking, before any member is rendered."""
    # Given
    sources = {"push": {"title": "Hi", "body": "\n{{ member.points_balance|numbr }}"}}

    # When / Then
    with pytest.raises(TemplateError, match="numbr") as caught:
        Renderer().check("promo", sources)
    assert (caught.value.template, caught.value.line) == ("promo/push.body.j2", 2)


def test_check_refuses_missing_and_unknown_parts() -> None:
    """Check needs exactly the channel's parts: none missing, none invented."""
    # Given / When / Then
    with pytest.raises(TemplateError, match="no source for this part") as missing:
        Renderer().check("promo", {"push": {"title": "Hi"}})
    assert missing.value.template == "promo/push.body.j2"
    with pytest.raises(TemplateError, match="push has no part 'subject'"):
        Renderer().check("promo", {"push": {"title": "Hi", "body": "Yo", "subject": "?"}})


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtins_pass_the_check(name: str) -> None:
    """Every built-in template compiles."""
    # Given / When / Then (no exception)
    Renderer().check(name, load_templates(name, CHANNEL_PARTS))


# --- built-ins rendered for a realistic member --------------------------------------


@pytest.mark.parametrize("name", BUILTIN_NAMES)
@pytest.mark.parametrize(
    ("locale", "time_zone"),
    [("en_US", "America/New_York"), ("de_DE", "Europe/Berlin"), ("fr-FR", "Europe/Paris")],
)
def test_builtins_render_for_a_realistic_member(name: str, locale: str, time_zone: str) -> None:
    """Every part of every built-in renders, personalised, with a GSM-7 SMS under 160."""
    # Given a realistic member context and an unsubscribe link
    context = member_context(locale, time_zone) | {"unsubscribe_url": "https://x.test/u?m=1&t=2"}
    sources = load_templates(name, CHANNEL_PARTS)
    renderer = Renderer()

    # When every channel is rendered
    messages = {
        channel: renderer.render("v1", name, sources, channel, context) for channel in CHANNEL_PARTS
    }

    # Then every part has text, the member's name, and no leftovers
    for channel, parts in messages.items():
        assert list(CHANNEL_PARTS[channel]) == list(parts)
        for part, text in parts.items():
            assert text, f"{channel}.{part} is empty"
            assert "None" not in text
            assert "{{" not in text
    assert "Maximilian" in messages["sms"]["text"]
    assert "Maximilian" in messages["email"]["subject"]
    assert gsm7_septets(messages["sms"]["text"]) <= 160
    assert "https://x.test/u?m=1&amp;t=2" in messages["email"]["html"]
    assert "https://x.test/u?m=1&t=2" in messages["email"]["text"]


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtin_html_is_a_well_formed_document(name: str) -> None:
    """The built-in email HTML has a doctype, a language, and balanced tags."""
    # Given
    sources = load_templates(name, ["email"])

    # When
    html = Renderer().render("v1", name, sources, "email", member_context("de_DE"))["html"]
    checker = _HtmlChecker()
    checker.feed(html)
    checker.close()

    # Then
    assert checker.doctype == "DOCTYPE html"
    assert '<html lang="de-DE">' in html
    assert (checker.open, checker.mismatched) == ([], [])


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtins_fall_back_when_the_first_name_is_unknown(name: str) -> None:
    """A member without a first name gets a friendly fallback, never "None"."""
    # Given
    context = member_context()
    context["member"]["first_name"] = None

    # When
    sms = Renderer().render("v1", name, load_templates(name, ["sms"]), "sms", context)["text"]

    # Then
    assert "friend!" in sms


def test_welcome_email_shows_enrollment_date_in_member_locale_and_zone() -> None:
    """The welcome email dates the enrollment in the member's language and time zone."""
    # Given a member who enrolled at 02:00 UTC on 1 Dec, i.e. 30 Nov in New York
    sources = load_templates("welcome-1", ["email"])

    # When
    text = Renderer().render("v1", "welcome-1", sources, "email", member_context())["text"]

    # Then
    assert "You joined on November 30, 2026 as a Platinum member and already have" in text
    assert "123,456 points." in text
