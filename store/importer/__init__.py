"""Member imports: a CSV or JSON Lines file upserted into the members table on ``external_id``.

Files
    ``.csv``: a header row naming the columns, then one member per row; UTF-8
    (a byte-order mark is fine); quoted cells may span lines; a row whose
    cells are all empty is ignored like a blank line.
    ``.jsonl`` / ``.ndjson``: one JSON object per line; blank lines are ignored.
    Errors name the physical line in the file (a CSV's header is line 1) and
    the field.

Fields (CSV column = JSON key)
    ``external_id`` (required, at most 64 characters), ``name``, ``email``
    (stored normalized), ``phone`` (numbers without ``+`` are read in the
    default region; stored as E.164), ``locale`` (``en_US`` or ``en-US``,
    stored as ``en_US``), ``time_zone`` (an IANA name), ``tier``,
    ``points_balance`` and ``purchases_count`` (whole numbers, 0 or more),
    ``enrolled_at`` and ``last_purchase_at`` (ISO-8601 with a UTC offset or
    ``Z``; a date alone or a time without offset is refused),
    ``address_line1``, ``address_line2``, ``address_city``,
    ``address_state``, ``address_zip``, ``address_country`` (ISO 3166-1
    alpha-2, stored upper-case), ``consent_sms``, ``consent_email``,
    ``consent_push``, ``consent_direct_mail`` (yes/no, true/false, 1/0,
    opted_in/opted_out). Attributes: CSV columns ``attributes.<key>`` (string
    values), or a JSON object under ``attributes``. JSON Lines only: ``lots``,
    a list of ``{points, earned_at, expires_at}`` point lots.

    A CSV column that is not one of these is refused for the whole file (a
    typo must not silently drop data); in JSON Lines an unknown key refuses
    its row. An ``external_id`` that appears twice in a file is an error on
    the later line.

What an import changes
    A new ``external_id`` inserts a member; empty values are NULL (or the
    column's default). An existing member is updated with the row's
    non-empty values only: empty cells, null values and columns absent from
    the file leave it untouched, and attributes are merged key by key.
    A consent value writes the member's consent for that channel, and a
    consent event (source ``import:<file name>`` unless one is given, detail
    naming the line), only when the status actually changes; a blank consent
    leaves it unchanged. An import never reverses an opt-out the member made
    themselves (a STOP reply, an unsubscribe link, a provider's report): only
    an opt-out that came from an import can be turned back into an opt-in.
    Point lots are appended only for members inserted by this import, so
    importing the same file again does not add them twice: importing a file
    again changes nothing.

Modes
    ``all-or-nothing`` (the default): every row is validated first. If any row
    has a problem, nothing is written and the report lists every problem
    (the first 100, and how many more). Otherwise all rows are written in one
    transaction.

    ``skip-bad``: rows are validated and written in chunks (1,000 rows by
    default), each chunk in a transaction of its own. Good rows are written;
    bad rows are reported and skipped. If the import stops part-way, the
    chunks already committed stay written; running it again is safe.

    In both modes a row is validated completely before any of it is written:
    a row is never half imported. A file that cannot be read at all (unknown
    format, not UTF-8, broken CSV quoting, a CSV header without
    ``external_id`` or with unknown columns) raises
    :class:`MemberImportError` before anything is written.
"""

from ._model import (
    DEFAULT_CHUNK_SIZE,
    MAX_LISTED_ERRORS,
    ImportMode,
    ImportReport,
    MemberImportError,
    RowError,
)
from ._run import import_members

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_LISTED_ERRORS",
    "ImportMode",
    "ImportReport",
    "MemberImportError",
    "RowError",
    "import_members",
]
