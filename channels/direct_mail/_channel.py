"""``DirectMailChannel``: each ``send_batch`` call is one drop (one CSV, one manifest)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from ..base import Message, Outcome, Receipt
from ..errors import PermanentDeliveryError, TransientDeliveryError
from ..sftp import SftpError, SftpRefused, SftpTarget
from ._address import PostalAddress, household_key, parse_address
from ._csv import render_csv
from ._files import MANIFEST_SUFFIX, atomic_write, drop_stem, manifest_bytes

__all__ = ["FIXED_COLUMNS", "HOUSEHOLD", "DirectMailChannel"]

#: The ``code`` of the error given to a second piece for one household: the
#: worker records such a delivery as suppressed (reason ``household``).
HOUSEHOLD = "household"

#: The vendor's fixed columns, in order; merge fields follow, sorted by name.
FIXED_COLUMNS = (
    "delivery_id",
    "name",
    "address_line1",
    "address_line2",
    "address_city",
    "address_state",
    "address_zip",
    "address_country",
)
_FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True)
class _Row:
    index: int
    message: Message
    address: PostalAddress
    fields: Mapping[str, str]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _merge_fields(parts: Mapping[str, str]) -> dict[str, str]:
    """The rendered merge fields, checked to be usable as CSV column names."""
    fields: dict[str, str] = {}
    for key, value in parts.items():
        if not _FIELD_NAME.fullmatch(key):
            raise PermanentDeliveryError(
                f"merge field {key!r} is not a column name (a letter, then letters, digits, _)"
            )
        if key in FIXED_COLUMNS:
            raise PermanentDeliveryError(f"merge field {key!r} clashes with a vendor column")
        fields[key] = str(value)
    return fields


def _drop_of(messages: Sequence[Message]) -> tuple[str, Any]:
    """The one (campaign, run id) the batch belongs to."""
    drops = {
        (str(m.metadata.get("campaign") or m.campaign), m.metadata.get("run_id")) for m in messages
    }
    if len(drops) != 1:
        raise ValueError(f"a direct-mail drop holds one campaign run; this batch mixes {drops}")
    return drops.pop()


class DirectMailChannel:
    """Writes each batch as a vendor export (CSV + manifest), uploaded by SFTP when configured.

    See :mod:`channels.direct_mail` for the file layout and the rules.

    Args:
        drop_dir: The folder the files are written to (created 0700 if missing).
            With ``sftp`` it is the local staging and record of every drop.
        sftp: Where to upload each drop, or None to leave the files in ``drop_dir``.
        clock: Returns the current UTC time (tests pass a fixed one).
    """

    name = "direct_mail"
    live: ClassVar[bool] = True
    max_batch: ClassVar[int] = 5000
    #: ``retry_after`` when the SFTP server was unreachable through every retry.
    sftp_retry_after: ClassVar[float] = 60.0
    #: ``retry_after`` when the SFTP server refused us (credentials, host key, permissions):
    #: the members' pieces are fine, the configuration needs a person.
    sftp_refused_retry_after: ClassVar[float] = 900.0

    def __init__(
        self,
        drop_dir: Path,
        *,
        sftp: SftpTarget | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.drop_dir = Path(drop_dir)
        self.sftp = sftp
        self._clock = clock

    def send_batch(self, messages: Sequence[Message]) -> list[Outcome]:
        """Export ``messages`` as one drop; return one outcome per message, in order.

        A message with an unusable address or merge field gets
        ``InvalidRecipient`` / ``PermanentDeliveryError`` with the reason; a
        second message to a household already in the drop gets
        ``PermanentDeliveryError("household: same address as delivery <id>")``;
        the others become rows and get a :class:`Receipt` whose
        ``provider_message_id`` is ``<csv file name>#<row>`` (rows count from
        1 after the header). When no message is exportable no file is written.
        If the files cannot be written or uploaded, every exported message gets
        ``TransientDeliveryError`` and a retry of the same messages reuses the
        same file names.

        Raises:
            ValueError: The batch mixes campaigns or runs (a worker bug).
        """
        if not messages:
            return []
        campaign, run_id = _drop_of(messages)
        outcomes: list[Outcome | None] = [None] * len(messages)
        ready: list[_Row] = []
        for index, message in enumerate(messages):
            try:
                address = parse_address(message.metadata.get("address"))
                fields = _merge_fields(message.parts)
            except PermanentDeliveryError as exc:
                outcomes[index] = exc
                continue
            ready.append(_Row(index, message, address, fields))
        invalid = len(messages) - len(ready)

        rows: list[_Row] = []
        first_at: dict[str, int] = {}
        for row in sorted(ready, key=lambda r: r.message.delivery_id):
            key = household_key(row.message.metadata["address"])
            if key in first_at:
                outcomes[row.index] = PermanentDeliveryError(
                    f"household: same address as delivery {first_at[key]}", code=HOUSEHOLD
                )
                continue
            first_at[key] = row.message.delivery_id
            rows.append(row)
        if rows:
            self._drop(rows, outcomes, campaign, run_id, invalid, len(ready) - len(rows))
        done = [outcome for outcome in outcomes if outcome is not None]
        if len(done) != len(messages):  # pragma: no cover - every branch above sets one
            raise AssertionError("a direct-mail message was left without an outcome")
        return done

    def _drop(
        self,
        rows: list[_Row],
        outcomes: list[Outcome | None],
        campaign: str,
        run_id: Any,
        invalid: int,
        household: int,
    ) -> None:
        merge_columns = sorted({name for row in rows for name in row.fields})
        columns = [*FIXED_COLUMNS, *merge_columns]
        data = render_csv(
            columns,
            (
                [
                    str(row.message.delivery_id),
                    row.address.name,
                    row.address.line1,
                    row.address.line2,
                    row.address.city,
                    row.address.state,
                    row.address.zip,
                    row.address.country,
                    *(row.fields.get(name, "") for name in merge_columns),
                ]
                for row in rows
            ),
        )
        now = self._clock()
        run_text = "" if run_id is None else str(run_id)
        ids = [row.message.delivery_id for row in rows]
        try:
            self.drop_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            stem = drop_stem(self.drop_dir, campaign, run_text, ids, now)
            csv_path = self.drop_dir / f"{stem}.csv"
            manifest_path = self.drop_dir / f"{stem}{MANIFEST_SUFFIX}"
            atomic_write(csv_path, data)
            atomic_write(
                manifest_path,
                manifest_bytes(
                    file=csv_path.name,
                    data=data,
                    rows=len(rows),
                    columns=columns,
                    campaign=campaign,
                    run_id=run_id if isinstance(run_id, int | str) else run_text or None,
                    created_at=now,
                    invalid=invalid,
                    household=household,
                ),
            )
        except OSError as exc:
            self._fail(rows, outcomes, f"could not write the drop in {self.drop_dir}: {exc}", None)
            return
        if self.sftp is not None:
            try:
                self.sftp.upload(csv_path)
                self.sftp.upload(manifest_path)  # last: its presence means the CSV is complete
            except SftpRefused as exc:
                self._fail(rows, outcomes, f"sftp refused: {exc}", self.sftp_refused_retry_after)
                return
            except SftpError as exc:
                self._fail(rows, outcomes, f"sftp unavailable: {exc}", self.sftp_retry_after)
                return
        for number, row in enumerate(rows, start=1):
            outcomes[row.index] = Receipt(
                provider_message_id=f"{csv_path.name}#{number}", accepted_at=now
            )

    @staticmethod
    def _fail(
        rows: list[_Row], outcomes: list[Outcome | None], detail: str, retry_after: float | None
    ) -> None:
        for row in rows:
            outcomes[row.index] = TransientDeliveryError(detail, retry_after=retry_after)

    def close(self) -> None:
        """Nothing to release: each drop opens and closes its own files and connections."""
        return None
