"""Rendering: strictness, the sandbox, escaping, Babel formatting and the cache."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest

from templates import Renderer, TemplateError
from templates._environment import LoyalcastSandbox

NBSP, NNBSP = "\u00a0", "\u202f"


def push(body: str, title: str = "Hi") -> dict[str, dict[str, str]]:
    """Sources of a push-only template with the given body."""
    return {"push": {"title": title, "body": body}}


def render_body(body: str, context: Mapping[str, Any] | None = None) -> str:
    """Render a push body on a fresh renderer."""
    given = {"member": {"first_name": "Ada"}} if context is None else context
    return Renderer().render("k", "promo", push(body), "push", given)["body"]


def in_locale(locale: str | None, time_zone: str | None = None) -> dict[str, Any]:
    return {"locale": locale, "time_zone": time_zone, "member": {}}


# --- missing data -------------------------------------------------------------------


def test_undefined_variable_names_file_and_line() -> None:
    """An undefined variable fails rendering with the part's file and line."""
    # Given a body that uses a field members do not have, on line 3
    body = "Hello {{ member.first_name }},\n\nyour nickname is {{ member.nickname }}"

    # When
    with pytest.raises(TemplateError) as caught:
        render_body(body)

    # Then
    assert (caught.value.template, caught.value.line) == ("promo/push.body.j2", 3)
    assert "nickname" in caught.value.problem


def test_printing_none_fails_but_a_fallback_renders() -> None:
    """Printing None is an error like an undefined name; `or` gives a fallback."""
    # Given a member with no first name
    context = {"member": {"first_name": None}}

    # When / Then
    with pytest.raises(TemplateError, match="printed value is None") as caught:
        render_body("\nHi {{ member.first_name }}!", context)
    assert caught.value.line == 2
    assert render_body('Hi {{ member.first_name or "there" }}!', context) == "Hi there!"


def test_any_exception_while_rendering_becomes_a_template_error() -> None:
    """A plain Python error in a template is a TemplateError with its line."""
    # Given / When
    with pytest.raises(TemplateError, match="ZeroDivisionError") as caught:
        render_body("ok\n{{ member.points / member.zero }}", {"member": {"points": 1, "zero": 0}})

    # Then
    assert caught.value.line == 2
    assert isinstance(caught.value.__cause__, ZeroDivisionError)


def test_channel_without_sources_is_refused() -> None:
    """Rendering a channel the sources lack, or no channel at all, is a TemplateError."""
    # Given / When / Then
    with pytest.raises(TemplateError, match="no sources for channel 'sms'"):
        Renderer().render("k", "promo", push("x"), "sms", {})
    with pytest.raises(TemplateError, match="unknown channel 'fax'"):
        Renderer().render("k", "promo", push("x"), "fax", {})


# --- sandbox ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("{{ ''.__class__.__mro__ }}", "'__class__' of 'str' object is unsafe"),
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "'__class__' of 'str'"),
        ("{{ member.__class__ }}", "'__class__' of 'dict' object is unsafe"),
        ("{{ cycler.__init__.__globals__ }}", "'__init__' of 'type' object is unsafe"),
        ("{{ lipsum.__globals__['os'].popen('id').read() }}", "'__globals__' of 'function'"),
        ("{{ '{0.__class__}'.format(member) }}", "'__class__' of 'dict' object is unsafe"),
        ("{{ member.clear() }}", "'clear' of 'dict' object is unsafe"),
        ("{{ member.update(first_name='Eve') }}", "'update' of 'dict' object is unsafe"),
        ("{{ member.tags.append('vip') }}", "'append' of 'list' object is unsafe"),
        ("{{ 'x' * member.big }}", "repetition would build 1000000000 items"),
        ("{{ [0] * 1000000 }}", "repetition would build 1000000 items"),
        ("{{ 2 ** member.big }}", "exponent 1000000000 is too large"),
        ("{{ range(member.big)|list }}", "Range too big"),
    ],
)
def test_sandbox_refuses_escapes_mutation_and_blowups(body: str, problem: str) -> None:
    """Python internals, changes to the context, and huge values are refused."""
    # Given a member the template might try to reach through or modify
    member = {"first_name": "Ada", "tags": ["gold"], "big": 10**9}
    before = {"first_name": "Ada", "tags": ["gold"], "big": 10**9}

    # When / Then
    with pytest.raises(TemplateError, match=re.escape(problem)) as caught:
        render_body(f"line one\n{body}", {"member": member})
    assert caught.value.line == 2
    assert before == member


def test_sandbox_allows_ordinary_template_logic() -> None:
    """Loops, conditions, filters and small arithmetic still work in the sandbox."""
    # Given
    body = (
        "{% for tag in member.tags|sort %}{{ tag|upper }}{% if not loop.last %}, {% endif %}"
        "{% endfor %} | {{ 'ab' * 2 }} | {{ 2 ** 10 }} | {{ member.attributes['items'] }}"
    )
    context = {"member": {"tags": ["vip", "gold"], "attributes": {"items": 3}}}

    # When / Then
    assert render_body(body, context) == "GOLD, VIP | abab | 1024 | 3"


# --- escaping and whitespace --------------------------------------------------------


def test_html_part_is_escaped_and_text_parts_are_not() -> None:
    """Only the email HTML part escapes; SMS, subject and plain text show raw text."""
    # Given a member whose name contains HTML and an ampersand
    sources = {
        "email": {"subject": "{{ n }}", "html": "<p>{{ n }}</p>", "text": "{{ n }}"},
        "sms": {"text": "{{ n }}"},
    }
    context = {"n": "<b>Tom & Jerry</b>"}
    renderer = Renderer()

    # When
    email = renderer.render("k", "promo", sources, "email", context)
    sms = renderer.render("k", "promo", sources, "sms", context)

    # Then
    assert email["html"] == "<p>&lt;b&gt;Tom &amp; Jerry&lt;/b&gt;</p>"
    assert "<b>Tom & Jerry</b>" == email["subject"] == email["text"] == sms["text"]


def test_parts_are_stripped_and_headers_are_one_line() -> None:
    """Parts lose outer whitespace; subject and title collapse to one line; blocks trim."""
    # Given
    sources = {
        "email": {
            "subject": "\n  Hello\n   {{ name }}  \n",
            "html": "\n<p>x</p>\n\n",
            "text": "  {% if name %}\n    Hi {{ name }}\n  {% endif %}\n  Bye\n",
        }
    }

    # When
    email = Renderer().render("k", "promo", sources, "email", {"name": "Ada"})

    # Then
    assert email == {"subject": "Hello Ada", "html": "<p>x</p>", "text": "Hi Ada\n  Bye"}


def test_sms_turns_cldr_no_break_spaces_into_spaces() -> None:
    """French grouping spaces become plain spaces in SMS, so it stays GSM-7."""
    # Given
    sources = {"sms": {"text": "{{ 1234567|number }} pts"}, **push("{{ 1234567|number }} pts")}
    renderer = Renderer()

    # When
    sms = renderer.render("k", "promo", sources, "sms", {"locale": "fr"})["text"]
    body = renderer.render("k", "promo", sources, "push", {"locale": "fr"})["body"]

    # Then
    assert sms == "1 234 567 pts"
    assert f"1{NNBSP}234{NNBSP}567 pts" == body


# --- Babel formatting ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        ("en", "1,234 | 1,234.5 | €12.50 | Nov 30, 2026 | November 30, 2026"),
        ("de", f"1.234 | 1.234,5 | 12,50{NBSP}€ | 30.11.2026 | 30. November 2026"),
        ("de-DE", f"1.234 | 1.234,5 | 12,50{NBSP}€ | 30.11.2026 | 30. November 2026"),
        ("fr_FR", f"1{NNBSP}234 | 1{NNBSP}234,5 | 12,50{NBSP}€ | 30 nov. 2026 | 30 novembre 2026"),
        ("xx", "1,234 | 1,234.5 | €12.50 | Nov 30, 2026 | November 30, 2026"),
        ("not a locale", "1,234 | 1,234.5 | €12.50 | Nov 30, 2026 | November 30, 2026"),
        (None, "1,234 | 1,234.5 | €12.50 | Nov 30, 2026 | November 30, 2026"),
    ],
)
def test_number_currency_and_date_follow_the_locale(locale: str | None, expected: str) -> None:
    """Filters format in the context's locale; an unknown or absent one means English."""
    # Given
    body = (
        "{{ n|number }} | {{ x|number }} | {{ 12.5|currency('eur') }} | {{ d|date }} | "
        "{{ d|date('long') }}"
    )
    context = in_locale(locale) | {"n": 1234, "x": Decimal("1234.5"), "d": dt.date(2026, 11, 30)}

    # When / Then
    assert expected == render_body(body, context)


def test_a_remembered_number_is_per_locale_and_pattern() -> None:
    """Ints are formatted once per value, pattern and locale, never in another's."""
    body = "{{ n|number }} {{ n|number('#,##0.00') }} {{ m|number }}"
    renders = [
        render_body(body, in_locale(locale) | {"n": 1234567, "m": 1234567.0})
        for locale in ("de", "en", "de")
    ]
    assert renders == [
        "1.234.567 1.234.567,00 1.234.567",
        "1,234,567 1,234,567.00 1,234,567",
        "1.234.567 1.234.567,00 1.234.567",
    ]


def test_locale_and_time_zone_fall_back_to_the_member() -> None:
    """Without top-level locale and time_zone, the member's own are used."""
    # Given
    context = {
        "member": {"locale": "de", "time_zone": "Asia/Tokyo"},
        "t": dt.datetime(2026, 11, 30, 20, 0, tzinfo=dt.UTC),
    }

    # When / Then
    assert render_body("{{ t|date }}", context) == "01.12.2026"


@pytest.mark.parametrize(
    ("time_zone", "expected"),
    [
        ("America/New_York", f"Nov 30, 2026 | 11/30/26, 9:00{NNBSP}PM"),
        ("Europe/Berlin", f"Dec 1, 2026 | 12/1/26, 3:00{NNBSP}AM"),
        ("Not/AZone", f"Dec 1, 2026 | 12/1/26, 2:00{NNBSP}AM"),
        (None, f"Dec 1, 2026 | 12/1/26, 2:00{NNBSP}AM"),
    ],
)
def test_instants_are_shown_in_the_member_time_zone(time_zone: str | None, expected: str) -> None:
    """2026-12-01T02:00Z is Nov 30 in New York; an unknown zone means UTC."""
    # Given
    context = in_locale("en", time_zone) | {"t": dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.UTC)}

    # When / Then
    assert expected == render_body("{{ t|date }} | {{ t|datetime('short') }}", context)


def test_naive_datetimes_are_utc_and_dates_and_strings_are_accepted() -> None:
    """A naive datetime counts as UTC; a date is never shifted; ISO strings parse."""
    # Given
    context = in_locale("en", "America/New_York") | {
        "naive": dt.datetime(2026, 12, 1, 2, 0),
        "day": dt.date(2026, 12, 1),
        "iso_instant": "2026-12-01T02:00:00Z",
        "iso_day": "2026-12-01",
    }
    body = "{{ naive|date }} | {{ day|date }} | {{ iso_instant|date }} | {{ iso_day|date }}"

    # When / Then
    assert render_body(body, context) == "Nov 30, 2026 | Dec 1, 2026 | Nov 30, 2026 | Dec 1, 2026"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("{{ 12.5|currency('NOPE') }}", "unknown currency code 'NOPE'"),
        ("{{ 'lots'|number }}", "InvalidOperation"),
        ("{{ member|number }}", "number needs a number, got dict"),
        ("{{ day|datetime }}", "use the date filter"),
        ("{{ member.joined|date }}", "joined"),
    ],
)
def test_bad_filter_input_is_a_template_error_with_line(body: str, problem: str) -> None:
    """Filters given the wrong kind of value fail with the template and line."""
    # Given
    context = {"member": {"first_name": "Ada"}, "day": dt.date(2026, 12, 1)}

    # When / Then
    with pytest.raises(TemplateError, match=problem) as caught:
        render_body(f"\n\n{body}", context)
    assert (caught.value.template, caught.value.line) == ("promo/push.body.j2", 3)


# --- compiled-template cache --------------------------------------------------------


def test_cache_reuses_compiled_templates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rendering the same key again compiles nothing; a new key compiles its parts."""
    # Given a spy on compilation
    compiled: list[str | None] = []
    original = LoyalcastSandbox.compile

    def spy(self: LoyalcastSandbox, source: str, name: str | None = None, **kw: Any) -> Any:
        compiled.append(name)
        return original(self, source, name, **kw)

    monkeypatch.setattr(LoyalcastSandbox, "compile", spy)
    renderer = Renderer()
    sources = {"email": {"subject": "S {{ n }}", "html": "<p>{{ n }}</p>", "text": "T {{ n }}"}}

    # When the same key renders for three members, then another key once
    for n in range(3):
        renderer.render("v1", "promo", sources, "email", {"n": n})
    last = renderer.render("v2", "promo", sources, "email", {"n": 9})

    # Then each key compiled each part once
    assert len(compiled) == 6
    assert (renderer.cache_info().hits, renderer.cache_info().misses, len(compiled)) == (6, 6, 6)
    assert last == {"subject": "S 9", "html": "<p>9</p>", "text": "T 9"}


def test_cache_recompiles_changed_sources_under_the_same_key() -> None:
    """A key reused for different sources renders the new sources, never stale ones."""
    # Given
    renderer = Renderer()
    renderer.render("v1", "promo", push("old"), "push", {})

    # When
    body = renderer.render("v1", "promo", push("new"), "push", {})["body"]

    # Then
    assert body == "new"


def test_cache_is_bounded_least_recently_used_first() -> None:
    """The cache keeps at most cache_size templates, dropping the least recently used."""
    # Given a cache of four templates filled by keys a and b (two parts each),
    # with a used again since, so b is the least recently used
    renderer = Renderer(cache_size=4)
    for key in ("a", "b", "a"):
        renderer.render(key, "promo", push(key), "push", {})

    # When key c needs room, and a is rendered once more
    renderer.render("c", "promo", push("c"), "push", {})
    renderer.render("a", "promo", push("a"), "push", {})

    # Then c pushed b out, not a: a's parts were hits both times
    info = renderer.cache_info()
    assert (info.hits, info.misses, info.maxsize, info.currsize) == (4, 6, 4, 4)


def test_cache_size_must_be_positive() -> None:
    """A renderer needs room for at least one compiled template."""
    # Given / When / Then
    with pytest.raises(ValueError, match="at least 1"):
        Renderer(cache_size=0)


def test_cache_is_thread_safe() -> None:
    """Many threads sharing one small cache render correctly and keep exact counters."""
    # Given more keys than the cache holds, rendered from eight threads
    renderer = Renderer(cache_size=4)
    jobs = [(f"v{i % 5}", i) for i in range(400)]

    def render(job: tuple[str, int]) -> tuple[str, dict[str, str]]:
        key, n = job
        sources = push(f"{key} {{{{ n }}}}", title=f"{key} title")
        return f"{key} {n}", renderer.render(key, "promo", sources, "push", {"n": n})

    # When
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(render, jobs))

    # Then every message is its own, and every lookup was counted once
    for expected_body, message in results:
        assert expected_body == message["body"]
        assert expected_body.split()[0] + " title" == message["title"]
    info = renderer.cache_info()
    assert 2 * len(jobs) == info.hits + info.misses
    assert info.currsize <= 4
