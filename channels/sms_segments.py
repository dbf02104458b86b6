"""How many SMS segments a text costs: GSM-7 or UCS-2, and where segments break.

A text made only of characters of the GSM 03.38 default alphabet (3GPP TS
23.038) and its extension table is sent as GSM-7: one septet per basic
character, two per extension character (an ESC septet and the character:
``^ { } \\ [ ~ ] | €`` and form feed). Any other character makes the whole
text UCS-2, counted in UTF-16 code units, so an emoji outside the Basic
Multilingual Plane counts 2.

One segment holds 160 septets or 70 UCS-2 units. A longer text is split
into concatenated segments whose user-data header leaves 153 septets or 67
units each. A character is never split across two segments: when an
escape pair (GSM-7) or a surrogate pair (UCS-2) does not fit in what is left
of a segment, that segment ends one unit short (152 or 66) and the pair starts
the next one. This is what handsets and carriers do, and what Twilio bills.

Twilio's optional "smart encoding" (replacing curly quotes and the like by
GSM-7 look-alikes on a Messaging Service) is not assumed: a text is counted
as written, so a count here is never lower than what Twilio charges.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "GSM7_BASIC",
    "GSM7_EXTENSION",
    "GSM7_MULTI",
    "GSM7_SINGLE",
    "UCS2_MULTI",
    "UCS2_SINGLE",
    "Encoding",
    "SegmentInfo",
    "count_segments",
]

#: Septets in a single-segment GSM-7 message.
GSM7_SINGLE = 160
#: Septets per segment of a concatenated GSM-7 message (7 go to the UDH).
GSM7_MULTI = 153
#: UTF-16 code units in a single-segment UCS-2 message.
UCS2_SINGLE = 70
#: UTF-16 code units per segment of a concatenated UCS-2 message.
UCS2_MULTI = 67

#: The GSM 03.38 default alphabet (one septet each), ESC (0x1B) left out.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: The GSM 03.38 extension table: two septets each (ESC + the character).
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

Encoding = Literal["GSM-7", "UCS-2"]


@dataclass(frozen=True, kw_only=True)
class SegmentInfo:
    """The encoding a text needs, its length in that encoding's units, and its segments."""

    encoding: Encoding
    units: int
    """Septets for GSM-7, UTF-16 code units for UCS-2."""
    segments: int
    """SMS segments billed; 0 for an empty text."""


def count_segments(text: str) -> SegmentInfo:
    """Count the encoding units and SMS segments of ``text``.

    Args:
        text: The message body, as it will be sent.

    Returns:
        The encoding (GSM-7 when every character is in the GSM 03.38 alphabet
        or its extension table, UCS-2 otherwise), the length in septets or
        UTF-16 code units, and the number of segments.
    """
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text):
        widths = [2 if ch in GSM7_EXTENSION else 1 for ch in text]
        return _info("GSM-7", widths, GSM7_SINGLE, GSM7_MULTI)
    widths = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    return _info("UCS-2", widths, UCS2_SINGLE, UCS2_MULTI)


def _info(encoding: Encoding, widths: list[int], single: int, multi: int) -> SegmentInfo:
    units = sum(widths)
    if units == 0:
        segments = 0
    elif units <= single:
        segments = 1
    else:
        segments = _pack(widths, multi)
    return SegmentInfo(encoding=encoding, units=units, segments=segments)


def _pack(widths: Iterable[int], capacity: int) -> int:
    """Segments needed when characters of ``widths`` fill segments of ``capacity`` in order.

    A character that does not fit whole in what is left of a segment starts
    the next one (no escape or surrogate pair is ever split).
    """
    segments, used = 1, 0
    for width in widths:
        if used + width > capacity:
            segments += 1
            used = 0
        used += width
    return segments
