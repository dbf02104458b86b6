"""Direct mail: export files a print vendor turns into letters and postcards.

This docstring is the file specification we hand to vendors.

Drops
=====

Each drop is two files, written to the drop folder and, when SFTP is
configured, uploaded to the vendor's folder in this order:

1. ``<campaign>-run<run id>-<UTC timestamp>-<drop id>.csv``: the pieces to print,
   e.g. ``winter-double-points-run42-20261201T100000Z-3f9a1c02b7de.csv``.
   (``-run<run id>`` is absent for sends that belong to no campaign run.)
2. ``<same name>.manifest.json``, written and uploaded **after** the CSV: a
   manifest's presence means its CSV is complete. Wait for the manifest,
   check ``sha256`` and ``rows``, then process the CSV. Ignore files ending
   in ``.partial`` (uploads in progress) and a CSV that has no manifest yet.

The manifest is a JSON object::

    {
      "file": "<the CSV's file name>",
      "rows": 1234,                      # data rows, the header not counted
      "columns": ["delivery_id", ...],   # the CSV header, in order
      "sha256": "<hex SHA-256 of the CSV file's bytes>",
      "campaign": "winter-double-points",
      "run_id": 42,                      # or null
      "created_at": "2026-12-01T10:00:00Z",
      "skipped": {"invalid": 3, "household": 7}
    }

``skipped`` counts the messages of this drop that are not in the CSV: refused
addresses or merge fields (``invalid``) and second pieces to a household
(``household``).

The same drop can arrive twice: a retry of the same deliveries has the same
file name (the drop id is a hash of the campaign, the run and the sorted
delivery ids, and the first attempt's timestamp is kept), and replaces the
earlier upload. Treat a file name you have already processed as a duplicate.

CSV layout (Lob-compatible)
===========================

UTF-8 without a byte-order mark, RFC 4180: comma-separated, ``\\r\\n`` line
ends, a header row, fields quoted with ``"`` only when they contain a comma,
a quote or a line break (quotes doubled inside). Columns, in this order:

1. ``delivery_id``: our id for the piece; unique; rows are sorted by it.
2. ``name``: the recipient, at most 40 characters; may be empty.
3. ``address_line1``: the street line, at most 64 characters.
4. ``address_line2``: apartment, suite or the like, at most 64; may be empty.
5. ``address_city``: at most 200 characters.
6. ``address_state``: US: the USPS two-letter code; elsewhere free text or empty.
7. ``address_zip``: US: ``12345`` or ``12345-6789``; elsewhere the postal code
   (at most 12 characters).
8. ``address_country``: ISO 3166-1 alpha-2 (``US``, ``GB``, ``DE``).
9. Then the campaign's merge fields (e.g. ``headline``, ``offer``), sorted by
   name; the same columns for every row of one drop (empty where a message
   has no such field).

**Formula neutralization** (OWASP CSV injection): any cell, header included,
whose first character is ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
is written with a single quote ``'`` in front. Address fields have their
whitespace (line breaks too) collapsed to single spaces; merge fields are
written as rendered and may contain line breaks.

Rules applied before export
===========================

- **Complete, valid address** (:func:`parse_address`): line 1, city, postal
  code and country are required, plus the state in the US; the US state must
  be a USPS code and the zip 5 or 5+4 digits; the country a real ISO code.
  Otherwise the message fails with ``InvalidRecipient`` and the reason
  (``incomplete address: missing city``). Limits are counted on the value as
  written: a name over 40 characters is shortened at a word boundary; any
  other field over its limit refuses the message rather than cut an address.
- **One piece per household** (:func:`household_key`): among the messages of a
  drop whose addresses normalize to the same key (case, whitespace,
  punctuation, Street/St and similar, Apartment/Apt/#, US zip to 5 digits),
  the lowest ``delivery_id`` is exported and each other one fails with
  ``PermanentDeliveryError("household: same address as delivery <id>")``.
  The worker can apply the same key across drops.

Files are written atomically (temporary file, ``fsync``, rename) with mode
0600, never readable by other users; the upload protocol (verification,
atomic rename, retries) is described in :mod:`channels.sftp`.
"""

from ._address import ADDRESS_FIELDS, LIMITS, PostalAddress, household_key, parse_address
from ._channel import FIXED_COLUMNS, HOUSEHOLD, DirectMailChannel
from ._csv import FORMULA_PREFIXES, neutralize
from ._files import MANIFEST_SUFFIX

__all__ = [
    "ADDRESS_FIELDS",
    "FIXED_COLUMNS",
    "FORMULA_PREFIXES",
    "HOUSEHOLD",
    "LIMITS",
    "MANIFEST_SUFFIX",
    "DirectMailChannel",
    "PostalAddress",
    "household_key",
    "neutralize",
    "parse_address",
]
