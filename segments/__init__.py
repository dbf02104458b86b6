"""Segments: the audience rule language, its compilation to SQL, and saved segments.

A marketer writes a rule in YAML or JSON, usually as a campaign's ``segment``::

    all:
      - {field: tier, op: in, value: [gold, platinum]}
      - {points_expiring: {within: 30d}, op: ">=", value: 100}
      - any: [{reachable: push}, {reachable: email}]
      - {consented: email}
      - not: {received: winter-double-points, within_last: 30d}

Groups
    ``all: [...]`` (every one), ``any: [...]`` (at least one), ``not: rule``.

Conditions: ``{field: <field>, op: <operator>, value: <value>}``
    ``=`` ``!=`` ``<`` ``<=`` ``>`` ``>=``
        ``{field: points_balance, op: ">=", value: 500}``; the ordering
        operators apply to numbers and instants, not to text (PostgreSQL would
        order text by its collation, so servers would disagree).
    ``in`` / ``not in``
        ``{field: tier, op: in, value: [gold, platinum]}`` (at most 1000 values).
    ``between``
        ``{field: points_balance, op: between, value: [100, 500]}``; both ends included.
    ``is null`` / ``is not null``
        ``{field: last_purchase_at, op: is null}``; no ``value``.
    ``starts_with``
        ``{field: name, op: starts_with, value: "Ann"}``; text only, case-sensitive,
        ``%`` and ``_`` are plain characters.
    ``contains``
        ``{field: attributes.tags, op: contains, value: vip}``; text lists only.
    ``within_last`` / ``older_than`` / ``within_next``
        ``{field: last_purchase_at, op: within_last, value: 30d}``; instants only.
        Durations are a whole number of hours, days or weeks: ``12h``, ``30d``,
        ``2w`` (no months: they differ in length). Against *now*:
        ``within_last`` is ``now - d <= x <= now``; ``older_than`` is
        ``x < now - d``; ``within_next`` is ``now < x <= now + d``.

Fields
    Every member column (``tier``, ``points_balance``, ``enrolled_at``,
    ``address_country``, ...; see :data:`FIELDS`), ``next_expiry`` (the
    earliest expiry date, after now, of a point lot with points left; missing
    when there is none) and ``attributes.<key>`` for the program's declared
    attributes: ``text``, ``integer``, ``number``, ``boolean``, ``instant``
    (ISO-8601 UTC text such as ``2026-12-01T10:00:00Z``; ``.250Z`` and
    ``+00:00`` are fine, other offsets are not) or ``text_list``. Instants in
    a rule are written with an offset or ``Z``.

Predicates
    ``{points_expiring: {within: 30d}, op: ">=", value: 100}``
        The points left (points minus redeemed) in lots expiring after now and
        at most 30 days from now. It is 0, never missing, when nothing expires.
    ``{next_expiry: {op: within_next, value: 14d}}``
        Shorthand for ``{field: next_expiry, op: within_next, value: 14d}``.
    ``{reachable: sms}``
        What the database can tell: ``sms`` a phone in E.164 shape (``+`` and
        digits), ``email`` a non-empty address, ``push`` a push token not
        revoked, ``direct_mail`` line 1, city, postal code and country filled
        in (and a state for the US). The delivery policy checks more just
        before sending (a real phone number, a well-formed address), so a few
        members of a ``reachable`` segment may still be suppressed then.
    ``{consented: email}``, ``{consented: sms, for: service}``
        ``for: marketing`` (the default) needs an explicit opt-in on the
        channel; ``service`` and ``transactional`` need only no opt-out.
    ``{received: winter-sale, within_last: 30d}``
        A delivery of that campaign was sent or delivered (within the window,
        if one is given). An unknown campaign name matches no one.

The NULL rule: a condition on a missing value is FALSE, never unknown, so
``not`` inverts it exactly. A value is missing when the column is NULL, or
when an attribute's key is absent, holds JSON ``null``, or holds a value of
another type than declared (``"7"`` for an integer). So
``{field: tier, op: "!=", value: gold}`` does not match a member with no tier;
``not: {field: tier, op: "=", value: gold}`` does. Only ``is null`` matches a
missing value. A missing attribute therefore never silently adds or drops a
member: write ``is null`` or ``not`` to say what you mean for it.

:func:`parse_rule` checks a rule (fields and predicates are a whitelist,
operators a table, values are type-checked; at most :data:`MAX_DEPTH` levels,
:data:`MAX_NODES` nodes and :data:`MAX_LIST_VALUES` values in a list) and
returns a frozen :data:`Rule` tree, or raises :class:`RuleError` naming the
path of the problem (``segment.all[2].op: unknown operator "=>"``).
:func:`compile_rule` turns the tree into a SQLAlchemy expression over
:class:`store.models.Member` that selects the same members on SQLite and
PostgreSQL; every value is a bound parameter. :func:`evaluate_rule` decides the
same thing in plain Python. Relative dates resolve against ``now`` (default:
the current UTC time). :func:`audience_filter` adds ``deleted_at IS NULL``.

Saved segments (:func:`save_segment`, :func:`load_segment`) live in the store;
:func:`preview` shows a rule's count, a sample, its SQL and the database's
plan; :func:`snapshot` stores a segment's members set-wise in SQL and returns
who entered and who left since its previous evaluation. The compiler opens no
session; these helpers use the caller's.
"""

from ._compile import audience_filter, compile_rule, evaluate_rule
from ._errors import RuleError
from ._fields import FIELDS, FieldSpec
from ._operators import OPERATORS, Arity, Frame, Operator
from ._parse import MAX_DEPTH, MAX_LIST_VALUES, MAX_NODES, parse_rule
from ._rules import (
    All,
    Any,
    Attribute,
    Condition,
    Consented,
    Not,
    PointsExpiring,
    Reachable,
    Received,
    Rule,
)
from ._saved import Preview, SnapshotDiff, load_segment, preview, save_segment, snapshot
from ._types import FieldType
from .expiry import (
    DEFAULT_BATCH,
    DueReminder,
    ExpiringPoints,
    due_reminders,
    expiry_candidates,
    iter_expiring,
)

__all__ = [
    "DEFAULT_BATCH",
    "FIELDS",
    "MAX_DEPTH",
    "MAX_LIST_VALUES",
    "MAX_NODES",
    "OPERATORS",
    "All",
    "Any",
    "Arity",
    "Attribute",
    "Condition",
    "Consented",
    "DueReminder",
    "ExpiringPoints",
    "FieldSpec",
    "FieldType",
    "Frame",
    "Not",
    "Operator",
    "PointsExpiring",
    "Preview",
    "Reachable",
    "Received",
    "Rule",
    "RuleError",
    "SnapshotDiff",
    "audience_filter",
    "compile_rule",
    "due_reminders",
    "evaluate_rule",
    "expiry_candidates",
    "iter_expiring",
    "load_segment",
    "parse_rule",
    "preview",
    "save_segment",
    "snapshot",
]
