"""The trigger, checked again just before sending (DESIGN.md §4).

A row's trigger was true when it was planned; by the time it is sent the
member may have redeemed the points a reminder is about, or matched a
sequence's exit rule. :func:`recheck` runs once per batch, in a transaction
of its own right after the deliver job loaded its rows (a check may write,
e.g. a sequence's exit), and returns the rows that end here with their
reason. Broadcasts have nothing to recheck beyond the policy every row gets
(consent, reachability, the campaign still active); a triggered row's member
must still be in the segment.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from store import Delivery, Member

from .compose import Closed
from .policy import ConsentState
from .reminder_recheck import recheck_reminders
from .runtime import Runtime
from .sequence_checks import check_sequence_rows
from .triggers import recheck_triggered

__all__ = ["Recheck", "recheck"]

#: ``check(session, rt, rows, members, consents, now)``: the rows of one kind that end here.
Recheck = Callable[
    [
        Session,
        Runtime,
        Sequence[Delivery],
        Mapping[int, Member],
        Mapping[int, Mapping[str, ConsentState]],
        datetime,
    ],
    list[Closed],
]

#: The checks, per campaign kind.
_CHECKS: dict[str, Recheck] = {
    "triggered": recheck_triggered,
    "expiry_reminder": recheck_reminders,
    "welcome_sequence": check_sequence_rows,
}


def recheck(
    rt: Runtime,
    rows: Sequence[Delivery],
    members: Mapping[int, Member],
    consents: Mapping[int, Mapping[str, ConsentState]],
    now: datetime,
) -> dict[int, Closed]:
    """The rows among ``rows`` whose trigger no longer holds, by delivery id."""
    by_kind: dict[str, list[Delivery]] = {}
    for row in rows:
        kind = rt.version(row.campaign_version_id).spec.kind
        if kind in _CHECKS:
            by_kind.setdefault(kind, []).append(row)
    ended: dict[int, Closed] = {}
    if not by_kind:
        return ended
    with rt.sessions.begin() as session:
        for name, kind_rows in by_kind.items():
            for closed in _CHECKS[name](session, rt, kind_rows, members, consents, now):
                ended[closed.delivery_id] = closed
    return ended
