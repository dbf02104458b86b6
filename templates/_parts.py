"""Channels, their parts, and the file name of each part's template."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from templates._errors import TemplateError

#: The parts each channel's message is made of, in the order they are rendered.
CHANNEL_PARTS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "sms": ("text",),
        "email": ("subject", "html", "text"),
        "push": ("title", "body"),
        # Direct mail: the merge fields a print vendor places on the piece; each
        # becomes a column of the export file (see channels/direct_mail.py).
        "direct_mail": ("headline", "message"),
    }
)

#: The one part rendered with HTML autoescape.
HTML_PART = ("email", "html")

#: Parts shown on a single line: runs of whitespace (newlines included) collapse
#: to one space, so a template's line breaks can never reach an email header.
SINGLE_LINE_PARTS = frozenset(
    {("email", "subject"), ("push", "title"), ("direct_mail", "headline")}
)

#: File name suffix of every template file.
TEMPLATE_SUFFIX = ".j2"


def part_filename(name: str, channel: str, part: str) -> str:
    """Return the file name of one part's template, relative to a template directory.

    Args:
        name: The template name (``"winter-double-points"``).
        channel: ``"sms"``, ``"email"`` or ``"push"``.
        part: One of the channel's parts.

    Returns:
        For example ``"winter-double-points/email.subject.j2"``.
    """
    return f"{name}/{channel}.{part}{TEMPLATE_SUFFIX}"


def parts_of(name: str, channel: str) -> tuple[str, ...]:
    """Return a channel's parts.

    Args:
        name: The template name, for the error message.
        channel: The channel.

    Returns:
        The channel's parts, from :data:`CHANNEL_PARTS`.

    Raises:
        TemplateError: The channel is not one of :data:`CHANNEL_PARTS`.
    """
    try:
        return CHANNEL_PARTS[channel]
    except KeyError:
        known = ", ".join(sorted(CHANNEL_PARTS))
        raise TemplateError(name, None, f"unknown channel {channel!r} (known: {known})") from None
