"""Postal addresses for print: cleaning, the vendor's rules, and the household key."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from babel import Locale

from ..errors import InvalidRecipient
from ._csv import neutralize

__all__ = ["ADDRESS_FIELDS", "LIMITS", "PostalAddress", "household_key", "parse_address"]

#: The keys of ``message.metadata["address"]``.
ADDRESS_FIELDS = ("name", "line1", "line2", "city", "state", "zip", "country")

#: Longest value the vendor prints, per field, counted after formula neutralization.
#: A longer ``name`` is shortened (see :func:`parse_address`); any other field refuses the message.
LIMITS = {
    "name": 40,
    "line1": 64,
    "line2": 64,
    "city": 200,
    "state": 200,
    "zip": 12,
}

#: USPS state codes: the 50 states, DC, the territories, the freely associated
#: states USPS serves, and the military "states" AA, AE, AP.
US_STATES = frozenset(
    # SIM905 ignored: a table of codes reads better as one string than as 62 quoted items
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV "  # noqa: SIM905
    "NH NJ NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY "
    "AS GU MP PR VI FM MH PW AA AE AP".split()
)

#: CLDR regions that are not ISO 3166-1 countries (continents, unions, reservations).
_NOT_COUNTRIES = frozenset(
    {"AC", "CP", "CQ", "DG", "EA", "EU", "EZ", "IC", "QO", "TA", "UN", "XA", "XB", "ZZ"}
)
#: ISO 3166-1 alpha-2 country codes (Kosovo's XK included), from Babel's CLDR data.
COUNTRIES = frozenset(
    code
    for code in map(str, Locale("en").territories)
    if len(code) == 2 and code.isalpha() and code not in _NOT_COUNTRIES
)

_US_ZIP = re.compile(r"\d{5}(-\d{4})?")


@dataclass(frozen=True, kw_only=True)
class PostalAddress:
    """An address as the vendor prints it: cleaned, checked, within the limits."""

    name: str
    line1: str
    line2: str
    city: str
    state: str
    zip: str
    country: str


def _clean(value: Any) -> str:
    """Text with control characters dropped and whitespace (newlines too) collapsed."""
    if value is None:
        return ""
    text = "".join(ch for ch in str(value) if unicodedata.category(ch) != "Cc" or ch.isspace())
    return " ".join(text.split())


def _shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters at the last space, or hard when there is none."""
    if len(text) <= limit:
        return text
    cut = text[: limit + 1].rsplit(" ", 1)[0].rstrip()
    return cut if cut and len(cut) <= limit else text[:limit]


def parse_address(raw: Any) -> PostalAddress:
    """Clean and check ``message.metadata["address"]`` against the vendor's rules.

    Rules, in the order they are checked:

    - ``line1``, ``city``, ``zip`` and ``country`` are required, and ``state``
      for the US; all missing ones are named at once:
      ``incomplete address: missing city, zip``.
    - ``country`` is an ISO 3166-1 alpha-2 code (any case; ``UK`` is refused
      with a hint to use ``GB``).
    - US: ``state`` is a USPS two-letter code and ``zip`` is ``12345`` or
      ``12345-6789``; a zip that lost its leading zero is refused, not guessed.
    - Lengths (:data:`LIMITS`) are counted on the printed value, after formula
      neutralization. A ``name`` over 40 characters is shortened at the last
      space within 40 (one long word is cut at 40); it is a salutation, and a
      shortened one still reaches the household. Any other field over its limit
      refuses the message: a cut street line could send the piece elsewhere.
    - ``name`` may be empty (policy does not require one); the piece then
      carries the address alone.

    Args:
        raw: The mapping with the :data:`ADDRESS_FIELDS` keys; values are strings
            (other values are converted with ``str``; ``None`` is empty).

    Returns:
        The printable address, whitespace collapsed, country and US state upper-cased.

    Raises:
        InvalidRecipient: With the reason, e.g. ``incomplete address: missing city``.
    """
    if not isinstance(raw, Mapping):
        raise InvalidRecipient("incomplete address: no address")
    values = {key: _clean(raw.get(key)) for key in ADDRESS_FIELDS}
    values["country"] = values["country"].upper()
    us = values["country"] == "US"
    if us:
        values["state"] = values["state"].upper()
    required = ["line1", "city", *(["state"] if us else []), "zip", "country"]
    missing = [key for key in required if not values[key]]
    if missing:
        raise InvalidRecipient(f"incomplete address: missing {', '.join(missing)}")
    country = values["country"]
    if country not in COUNTRIES:
        hint = " (use GB)" if country == "UK" else ""
        raise InvalidRecipient(
            f"invalid address: country {country!r} is not an ISO 3166-1 alpha-2 code{hint}"
        )
    if us and values["state"] not in US_STATES:
        raise InvalidRecipient(f"invalid address: {values['state']!r} is not a US state code")
    if us and not _US_ZIP.fullmatch(values["zip"]):
        raise InvalidRecipient(
            f"invalid address: US zip {values['zip']!r} is not 12345 or 12345-6789"
        )
    printed = {key: neutralize(value) for key, value in values.items()}
    printed["name"] = _shorten(printed["name"], LIMITS["name"])
    for key, limit in LIMITS.items():
        if len(printed[key]) > limit:
            raise InvalidRecipient(
                f"address too long to print: {key} has {len(printed[key])} characters, "
                f"the limit is {limit}"
            )
    return PostalAddress(**printed)


#: Words written several ways, mapped to one spelling for the household key.
#: Every secondary-unit designator (apartment, apt, #, unit, suite, ste, room)
#: becomes ``#``: "Apt 4", "#4", "Unit 4" and "Suite 4" at one street address
#: are one household.
_WORDS = {
    "street": "st",
    "avenue": "ave",
    "av": "ave",
    "road": "rd",
    "drive": "dr",
    "boulevard": "blvd",
    "lane": "ln",
    "court": "ct",
    "place": "pl",
    "terrace": "ter",
    "parkway": "pkwy",
    "highway": "hwy",
    "circle": "cir",
    "square": "sq",
    "north": "n",
    "south": "s",
    "east": "e",
    "west": "w",
    "northeast": "ne",
    "northwest": "nw",
    "southeast": "se",
    "southwest": "sw",
    "apartment": "#",
    "apt": "#",
    "unit": "#",
    "suite": "#",
    "ste": "#",
    "room": "#",
    "rm": "#",
}
_PO_BOX = re.compile(r"\b(?:p\s*o|post\s+office)\s+box\b")
_TOKEN = re.compile(r"[^\W_]+|#")


def _fold(text: str) -> str:
    """Case-folded text without accents (``Straße`` -> ``strasse``, ``Bogotá`` -> ``bogota``)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def _street_tokens(text: str) -> list[str]:
    text = re.sub(r"[^\w#]+", " ", _fold(text))  # punctuation out: "St." -> "st"
    text = _PO_BOX.sub("pobox", text)
    tokens: list[str] = []
    for token in _TOKEN.findall(text):
        word = _WORDS.get(token, token)
        if not (word == "#" and tokens and tokens[-1] == "#"):  # "Apt #4" -> "# 4"
            tokens.append(word)
    return tokens


def household_key(address: Mapping[str, Any]) -> str:
    """A key equal for two addresses that are the same household.

    The key is built from the country, the postal code and the street lines
    (``line1`` then ``line2``), normalized: case-folded and accents removed,
    whitespace collapsed, punctuation removed, common words in one spelling
    (Street/St, Avenue/Ave, Road/Rd, Drive/Dr, Boulevard/Blvd, Lane/Ln,
    Court/Ct, Place/Pl, North/N ..., P.O. Box/PO Box) and every unit
    designator (Apartment, Apt, #, Unit, Suite, Ste, Room) as one; a US zip
    counts by its first five digits, any other postal code without spaces or
    hyphens. The name is left out (a household holds several members), and
    so are city and state, which the postal code already implies ("St. Louis"
    and "Saint Louis", "CA" and "California" must not split a household).

    It works on any mapping with the ``metadata["address"]`` keys, valid or not,
    so a worker can dedupe across batches too. The key is a SHA-256 digest (32
    hex characters), fixed-length and free of the address itself.

    Args:
        address: A mapping with ``line1``, ``line2``, ``zip`` and ``country``.

    Returns:
        The household key.
    """
    country = _clean(address.get("country")).upper()
    postal = _fold(_clean(address.get("zip")))
    if country == "US":
        postal = "".join(ch for ch in postal if ch.isdigit())[:5]
    else:
        postal = re.sub(r"[\s-]+", "", postal)
    street = _street_tokens(f"{_clean(address.get('line1'))} {_clean(address.get('line2'))}")
    normal = "\x1f".join([country, postal, " ".join(street)])
    return hashlib.sha256(normal.encode("utf-8")).hexdigest()[:32]
