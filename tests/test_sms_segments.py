"""SMS segment counting: GSM-7 or UCS-2, 160/153 and 70/67, no pair split across segments."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from channels.sms_segments import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    Encoding,
    SegmentInfo,
    count_segments,
)

GSM_BASIC_TEXT = "".join(sorted(GSM7_BASIC))


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        pytest.param("", "GSM-7", 0, 0, id="empty"),
        pytest.param("a" * 160, "GSM-7", 160, 1, id="gsm-160-one-segment"),
        pytest.param("a" * 161, "GSM-7", 161, 2, id="gsm-161-two-segments"),
        pytest.param("a" * 306, "GSM-7", 306, 2, id="gsm-306-two-full-segments"),
        pytest.param("a" * 307, "GSM-7", 307, 3, id="gsm-307-three-segments"),
        pytest.param("€" * 80, "GSM-7", 160, 1, id="escape-chars-count-two"),
        pytest.param("^{}\\[~]|€\f", "GSM-7", 20, 1, id="whole-extension-table"),
        pytest.param("€" * 81, "GSM-7", 162, 2, id="escape-chars-past-160"),
        pytest.param("a" * 159 + "{", "GSM-7", 161, 2, id="one-escape-tips-over"),
        pytest.param("Hi!\r\nÇa va? £5 ¿Qué?", "GSM-7", 20, 1, id="basic-accents-and-crlf"),
        pytest.param("ж" * 70, "UCS-2", 70, 1, id="ucs2-70-one-segment"),
        pytest.param("ж" * 71, "UCS-2", 71, 2, id="ucs2-71-two-segments"),
        pytest.param("ж" * 134, "UCS-2", 134, 2, id="ucs2-134-two-full-segments"),
        pytest.param("ж" * 135, "UCS-2", 135, 3, id="ucs2-135-three-segments"),
        pytest.param("a" * 69 + "á", "UCS-2", 70, 1, id="one-non-gsm-char-makes-all-ucs2"),
        pytest.param("It’s here", "UCS-2", 9, 1, id="curly-quote-is-not-gsm"),
        pytest.param("😀", "UCS-2", 2, 1, id="emoji-is-two-units"),
        pytest.param("😀" * 35, "UCS-2", 70, 1, id="35-emoji-fill-one-segment"),
        pytest.param("a" * 69 + "😀", "UCS-2", 71, 2, id="emoji-tips-over-70"),
    ],
)
def test_segment_table(text: str, encoding: Encoding, units: int, segments: int) -> None:
    """Encoding, units and segments follow GSM 03.38 and the 160/153, 70/67 limits."""
    # Given a text / When it is counted
    info = count_segments(text)
    # Then the encoding, unit count and segment count are the expected ones
    assert SegmentInfo(encoding=encoding, units=units, segments=segments) == info


def test_whole_basic_alphabet_is_gsm7() -> None:
    """Every character of the GSM 03.38 default alphabet is one septet."""
    # Given the 127 printable characters of the default alphabet (ESC left out)
    assert len(GSM7_BASIC) == 127
    assert len(GSM7_EXTENSION) == 10
    # When they are counted together
    info = count_segments(GSM_BASIC_TEXT)
    # Then they are GSM-7 at one septet each
    assert (info.encoding, info.units) == ("GSM-7", 127)


def test_escape_pair_is_not_split_across_segments() -> None:
    """A segment ends at 152 septets when the 153rd would be the first half of an escape."""
    # Given 306 septets whose escape character would straddle the first boundary
    straddling = "a" * 152 + "€" + "a" * 152
    # And 306 septets whose escape character ends exactly on it
    aligned = "a" * 151 + "€" + "a" * 153
    # When both are counted
    straddling_info = count_segments(straddling)
    aligned_info = count_segments(aligned)
    # Then both are 306 septets, but the straddling one needs a third segment
    assert (straddling_info.units, straddling_info.segments) == (306, 3)
    assert (aligned_info.units, aligned_info.segments) == (306, 2)


def test_surrogate_pair_is_not_split_across_segments() -> None:
    """A UCS-2 segment ends at 66 units when an emoji would straddle the 67-unit boundary."""
    # Given 134 units whose emoji would straddle the first boundary, and one where it fits
    straddling = "ж" * 66 + "😀" + "ж" * 66
    aligned = "ж" * 65 + "😀" + "ж" * 67
    # When both are counted
    straddling_info = count_segments(straddling)
    aligned_info = count_segments(aligned)
    # Then the straddling one needs a third segment
    assert (straddling_info.units, straddling_info.segments) == (134, 3)
    assert (aligned_info.units, aligned_info.segments) == (134, 2)


@given(st.text(alphabet=sorted(GSM7_BASIC), max_size=700))
def test_plain_gsm_text_segments_are_the_simple_division(text: str) -> None:
    """Without escape characters, segments are 1 up to 160 septets, then ceil(n / 153)."""
    # Given GSM-7 text without extension characters / When it is counted
    info = count_segments(text)
    # Then the count is the simple division
    n = len(text)
    expected = 0 if n == 0 else 1 if n <= 160 else math.ceil(n / 153)
    assert ("GSM-7", n, expected) == (info.encoding, info.units, info.segments)


@given(st.text(max_size=400))
def test_segments_always_hold_the_units(text: str) -> None:
    """Any text's units fit in its segments, and splitting pairs never costs two extra."""
    # Given any text / When it is counted
    info = count_segments(text)
    # Then the segments hold every unit, and at most one unit per segment is lost
    single, multi = (160, 153) if info.encoding == "GSM-7" else (70, 67)
    if info.segments <= 1:
        assert info.units <= single
    else:
        assert info.units <= info.segments * multi
        assert info.units > (info.segments - 1) * (multi - 1)
