"""The direct-mail channel: export files a print vendor can trust, and their SFTP upload."""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import socket
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from channels import (
    Channel,
    InvalidRecipient,
    Message,
    PermanentDeliveryError,
    Receipt,
    TransientDeliveryError,
)
from channels.direct_mail import DirectMailChannel, household_key, parse_address
from channels.sftp import SftpRefused, SftpTarget, SftpUnavailable, SftpUrlError

if TYPE_CHECKING:
    from tests.sftp_server import SftpServer

#: The real-sshd fixture ``sftp_server`` (imported as a plugin so pytest rewrites its asserts).


NOW = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
ADDRESS = {
    "name": "Ada Lovelace",
    "line1": "123 Main Street",
    "line2": "Apt 4",
    "city": "Springfield",
    "state": "IL",
    "zip": "62704",
    "country": "US",
}
HEADER = [
    "delivery_id",
    "name",
    "address_line1",
    "address_line2",
    "address_city",
    "address_state",
    "address_zip",
    "address_country",
]


def message(
    delivery_id: int,
    *,
    address: Mapping[str, Any] | None = None,
    parts: Mapping[str, str] | None = None,
    campaign: str = "winter-double-points",
    run_id: int | None = 42,
    **address_changes: str,
) -> Message:
    """A direct-mail message; ``address_changes`` edit the default address, each a new street."""
    base = dict(ADDRESS, line1=f"{delivery_id} Main Street")
    return Message(
        delivery_id=delivery_id,
        dedupe_key=f"run:{run_id}:member:{delivery_id}",
        member_id=delivery_id,
        channel="direct_mail",
        to="unused",
        parts=parts if parts is not None else {"offer": "Double points", "headline": "Hi"},
        category="marketing",
        campaign=campaign,
        metadata={
            "address": address if address is not None else base | address_changes,
            "campaign": campaign,
            "run_id": run_id,
        },
    )


def at(moment: datetime) -> Any:
    """A clock stuck at ``moment``."""
    return lambda: moment


@pytest.fixture
def drop_dir(tmp_path: Path) -> Path:
    return tmp_path / "drops"


@pytest.fixture
def channel(drop_dir: Path) -> DirectMailChannel:
    return DirectMailChannel(drop_dir, clock=at(NOW))


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def only_drop(directory: Path) -> tuple[Path, Path]:
    """The one CSV in ``directory`` and its manifest."""
    (csv_path,) = directory.glob("*.csv")
    return csv_path, csv_path.with_name(csv_path.name.removesuffix(".csv") + ".manifest.json")


def read_rows(csv_path: Path) -> list[list[str]]:
    with csv_path.open(encoding="utf-8", newline="") as fh:
        return list(csv.reader(fh))


# -- layout ------------------------------------------------------------------------------


def test_is_a_live_channel_with_large_batches(channel: DirectMailChannel) -> None:
    """The channel implements the Channel protocol, is live, and takes thousands per drop."""
    # Given / When the channel
    # Then it is a Channel named direct_mail
    assert isinstance(channel, Channel)
    assert (channel.name, channel.live) == ("direct_mail", True)
    assert channel.max_batch >= 5000


def test_csv_has_the_vendor_columns_then_sorted_merge_fields(
    channel: DirectMailChannel, drop_dir: Path
) -> None:
    """Lob's address columns come first in order, then the merge fields sorted by name."""
    # Given messages whose merge fields differ between members
    batch = [
        message(2, parts={"offer": 'Triple, "gold" points', "headline": "Hello"}),
        message(1, parts={"zeta": "z", "headline": "Hi"}),
    ]

    # When the batch is dropped
    channel.send_batch(batch)

    # Then the header is the fixed columns and the union of merge fields, sorted
    csv_path, _ = only_drop(drop_dir)
    rows = read_rows(csv_path)
    assert rows[0] == [*HEADER, "headline", "offer", "zeta"]
    # And rows are sorted by delivery id, with an empty cell for a missing field
    assert rows[1:] == [
        [
            "1",
            "Ada Lovelace",
            "1 Main Street",
            "Apt 4",
            "Springfield",
            "IL",
            "62704",
            "US",
            "Hi",
            "",
            "z",
        ],
        [
            "2",
            "Ada Lovelace",
            "2 Main Street",
            "Apt 4",
            "Springfield",
            "IL",
            "62704",
            "US",
            "Hello",
            'Triple, "gold" points',
            "",
        ],
    ]
    # And the bytes are RFC 4180: CRLF line ends, quotes only where needed, no BOM
    raw = csv_path.read_bytes()
    assert raw.startswith(b"delivery_id,name,")
    assert raw.count(b"\r\n") == 3
    assert b'"Triple, ""gold"" points"' in raw


def test_receipts_name_the_file_and_row(channel: DirectMailChannel, drop_dir: Path) -> None:
    """Each exported message's receipt is ``<csv name>#<data row>``, in the caller's order."""
    # Given a batch out of delivery-id order
    batch = [message(20), message(10)]

    # When it is dropped
    outcomes = channel.send_batch(batch)

    # Then each message has a receipt pointing at its row
    csv_path, _ = only_drop(drop_dir)
    assert all(isinstance(o, Receipt) for o in outcomes)
    assert [o.provider_message_id for o in outcomes if isinstance(o, Receipt)] == [
        f"{csv_path.name}#2",
        f"{csv_path.name}#1",
    ]
    assert csv_path.name.startswith("winter-double-points-run42-20261201T100000Z-")


def test_manifest_describes_the_csv_and_its_sha256_verifies(
    channel: DirectMailChannel, drop_dir: Path
) -> None:
    """The manifest names the file, its rows, columns, campaign, run, time and checksum."""
    # Given three messages, one with an incomplete address and one to the same household
    batch = [message(1), message(2, city=""), message(3, line1="1 Main St.")]

    # When the batch is dropped
    channel.send_batch(batch)

    # Then the manifest describes the CSV
    csv_path, manifest_path = only_drop(drop_dir)
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    assert manifest == {
        "file": csv_path.name,
        "rows": 1,
        "columns": [*HEADER, "headline", "offer"],
        "sha256": hashlib.sha256(csv_path.read_bytes()).hexdigest(),
        "campaign": "winter-double-points",
        "run_id": 42,
        "created_at": "2026-12-01T10:00:00Z",
        "skipped": {"invalid": 1, "household": 1},
    }


def test_both_files_are_0600_whatever_the_umask(channel: DirectMailChannel, drop_dir: Path) -> None:
    """The CSV and the manifest hold addresses: only their owner may read them."""
    # Given a permissive umask
    previous = os.umask(0)
    try:
        # When a batch is dropped
        channel.send_batch([message(1)])
    finally:
        os.umask(previous)

    # Then both files are 0600
    for path in only_drop(drop_dir):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_no_temporary_file_is_left_behind(channel: DirectMailChannel, drop_dir: Path) -> None:
    """Files appear by rename; only the CSV and the manifest remain."""
    # Given / When two drops
    channel.send_batch([message(1)])
    channel.send_batch([message(2)])

    # Then the folder holds two CSVs and two manifests, nothing else
    names = files(drop_dir)
    assert len(names) == 4
    assert all(n.endswith((".csv", ".manifest.json")) and not n.startswith(".") for n in names)


def test_a_failed_write_leaves_no_file_and_is_transient(
    channel: DirectMailChannel, drop_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk error mid-write leaves neither a final nor a temporary file, and can be retried."""

    # Given a disk that fails while the CSV is being flushed
    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)

    # When a batch with one invalid message is dropped
    outcomes = channel.send_batch([message(1), message(2, zip="")])

    # Then the exported message is transient, the invalid one still invalid
    assert isinstance(outcomes[0], TransientDeliveryError)
    assert isinstance(outcomes[1], InvalidRecipient)
    # And the drop folder is empty
    assert files(drop_dir) == []


def test_a_crash_mid_write_leaves_no_file(
    channel: DirectMailChannel, drop_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any exception during the write (not only OSError) removes the temporary file."""

    # Given a write that is interrupted after part of the data
    real_write = os.write

    def crash(fd: int, data: Any) -> int:
        real_write(fd, bytes(data)[:10])
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(os, "write", crash)

    # When a batch is dropped, Then the crash propagates
    with pytest.raises(RuntimeError, match="killed mid-write"):
        channel.send_batch([message(1)])
    # And no file, final or temporary, is visible
    assert files(drop_dir) == []


# -- CSV injection -------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["=", "+", "-", "@", "\t", "\r"])
def test_formula_cells_are_neutralized(
    channel: DirectMailChannel, drop_dir: Path, prefix: str
) -> None:
    """A cell starting with = + - @ tab or CR gets a leading single quote (OWASP)."""
    # Given a merge field and a name that a spreadsheet would run as a formula
    payload = f'{prefix}HYPERLINK("http://evil.example","x")'
    batch = [message(1, parts={"offer": payload, "safe": "a=b"}, name=f"{prefix}1+1")]

    # When the batch is dropped
    channel.send_batch(batch)

    # Then the merge field is quoted, its content otherwise unchanged
    csv_path, _ = only_drop(drop_dir)
    header, row = read_rows(csv_path)
    cells = dict(zip(header, row, strict=True))
    assert cells["offer"] == "'" + payload
    # And a formula sign inside a cell is left alone
    assert cells["safe"] == "a=b"
    # And so is the name (a tab or CR in front of an address field is trimmed as whitespace)
    assert cells["name"] == ("1+1" if prefix.isspace() else f"'{prefix}1+1")


# -- addresses ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"line1": ""}, "incomplete address: missing line1"),
        ({"city": "  "}, "incomplete address: missing city"),
        ({"zip": ""}, "incomplete address: missing zip"),
        ({"country": ""}, "incomplete address: missing country"),
        ({"state": ""}, "incomplete address: missing state"),
        ({"city": "", "zip": ""}, "incomplete address: missing city, zip"),
    ],
)
def test_incomplete_addresses_are_refused_with_the_reason(
    channel: DirectMailChannel, changes: dict[str, str], reason: str
) -> None:
    """A missing line 1, city, zip, country (or US state) fails that message, naming the gap."""
    # Given a message whose address lacks a required part
    # When it is dropped
    (outcome,) = channel.send_batch([message(1, **changes)])

    # Then it fails as an invalid recipient with the reason
    assert isinstance(outcome, InvalidRecipient)
    assert outcome.detail == reason


def test_a_message_without_an_address_is_refused(channel: DirectMailChannel) -> None:
    """No ``metadata["address"]`` at all is an incomplete address."""
    # Given a message without an address
    bare = Message(
        delivery_id=1,
        dedupe_key="k",
        member_id=1,
        channel="direct_mail",
        to="",
        parts={},
        category="marketing",
        campaign="c",
        metadata={"campaign": "c", "run_id": 1},
    )

    # When it is dropped, Then it is refused
    (outcome,) = channel.send_batch([bare])
    assert isinstance(outcome, InvalidRecipient)
    assert outcome.detail == "incomplete address: no address"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"state": "Illinois"}, "invalid address: 'ILLINOIS' is not a US state code"),
        ({"state": "XX"}, "invalid address: 'XX' is not a US state code"),
        ({"zip": "6270"}, "invalid address: US zip '6270' is not 12345 or 12345-6789"),
        ({"zip": "627041"}, "invalid address: US zip '627041' is not 12345 or 12345-6789"),
        ({"zip": "62704-12"}, "invalid address: US zip '62704-12' is not 12345 or 12345-6789"),
        ({"zip": "ABCDE"}, "invalid address: US zip 'ABCDE' is not 12345 or 12345-6789"),
        ({"country": "USA"}, "invalid address: country 'USA' is not an ISO 3166-1 alpha-2 code"),
        (
            {"country": "uk", "state": ""},
            "invalid address: country 'UK' is not an ISO 3166-1 alpha-2 code (use GB)",
        ),
    ],
)
def test_us_state_zip_and_country_codes_are_checked(changes: dict[str, str], reason: str) -> None:
    """US addresses need a USPS state code and a 5 or 5+4 digit zip; countries are ISO codes."""
    # Given an address with a malformed code
    # When it is parsed, Then it is refused with the reason
    with pytest.raises(InvalidRecipient) as caught:
        parse_address(ADDRESS | changes)
    assert caught.value.detail == reason


def test_valid_codes_are_normalized() -> None:
    """Lower-case state and country are upper-cased; a 5+4 zip is kept; whitespace collapses."""
    # Given an address typed carelessly
    raw = ADDRESS | {"state": "il", "country": "us", "zip": " 62704-1234 ", "line1": "1\n Main  St"}

    # When it is parsed
    address = parse_address(raw)

    # Then the printed values are clean
    assert (
        address.state,
        address.country,
        address.zip,
        address.line1,
    ) == ("IL", "US", "62704-1234", "1 Main St")


def test_outside_the_us_state_is_optional_and_postcodes_are_free_form() -> None:
    """A UK address needs no state and keeps its postcode as written."""
    # Given / When a British address
    address = parse_address(
        {
            "name": "Ada",
            "line1": "10 Downing St",
            "city": "London",
            "zip": "SW1A 2AA",
            "country": "gb",
        }
    )
    # Then it is accepted
    assert (address.state, address.zip, address.country) == ("", "SW1A 2AA", "GB")


def test_a_long_name_is_shortened_at_a_word_boundary() -> None:
    """A name over 40 characters is cut at the last space within 40; one long word at 40."""
    # Given names longer than the vendor's 40 characters
    long_name = "Augusta Ada King Countess of Lovelace and Baroness"
    one_word = "X" * 50

    # When they are parsed
    short = parse_address(ADDRESS | {"name": long_name}).name
    cut = parse_address(ADDRESS | {"name": one_word}).name

    # Then the cut is on a word boundary, within the limit
    assert short == "Augusta Ada King Countess of Lovelace"
    assert cut == "X" * 40


def test_a_long_street_line_is_refused_not_truncated(channel: DirectMailChannel) -> None:
    """A street line over 64 characters fails the message: a cut address could misdeliver."""
    # Given a 70-character line 1
    (outcome,) = channel.send_batch([message(1, line1="1 " + "Very" * 17)])

    # Then it is refused with the reason
    assert isinstance(outcome, InvalidRecipient)
    assert outcome.detail == ("address too long to print: line1 has 70 characters, the limit is 64")


def test_merge_field_names_must_be_column_names(channel: DirectMailChannel) -> None:
    """A merge field that clashes with a vendor column or is no identifier fails the message."""
    # Given messages whose templates produced unusable field names
    batch = [message(1, parts={"name": "x"}), message(2, parts={"=cmd": "x"}), message(3)]

    # When they are dropped
    outcomes = channel.send_batch(batch)

    # Then the first two fail for good, the third is exported
    assert isinstance(outcomes[0], PermanentDeliveryError)
    assert outcomes[0].detail == "merge field 'name' clashes with a vendor column"
    assert isinstance(outcomes[1], PermanentDeliveryError)
    assert isinstance(outcomes[2], Receipt)


# -- households ----------------------------------------------------------------------------


def test_one_piece_per_household_lowest_delivery_id_wins(
    channel: DirectMailChannel, drop_dir: Path
) -> None:
    """Members at the same address get one piece: the lowest delivery id's."""
    # Given three members of one household, written three ways, and a neighbour
    batch = [
        message(7, line1="12 Oak Avenue", line2="Apartment 3", name="Bob"),
        message(5, line1="12 oak ave.", line2="#3", zip="62704-0001", name="Carol"),
        message(9, line1="12 OAK AVE APT 3", line2="", name="Dan"),
        message(6, line1="12 Oak Avenue", line2="Apt 4", name="Eve"),
    ]

    # When they are dropped
    outcomes = channel.send_batch(batch)

    # Then delivery 5 is exported, 7 and 9 are refused as its household, 6 is exported
    assert isinstance(outcomes[1], Receipt)
    assert isinstance(outcomes[3], Receipt)
    for outcome in (outcomes[0], outcomes[2]):
        assert isinstance(outcome, PermanentDeliveryError)
        assert not isinstance(outcome, InvalidRecipient)
        assert outcome.detail == "household: same address as delivery 5"
    csv_path, _ = only_drop(drop_dir)
    assert [row[0] for row in read_rows(csv_path)[1:]] == ["5", "6"]


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (
            {"line1": "123 Main Street", "line2": "Apt. 4"},
            {"line1": "123  main st #4", "line2": ""},
        ),
        ({"line1": "12 Oak Avenue"}, {"line1": "12 OAK AVE."}),
        ({"line1": "1 North Elm Road"}, {"line1": "1 N. Elm Rd"}),
        ({"line1": "P.O. Box 99"}, {"line1": "PO BOX 99"}),
        (
            {"line1": "1 Elm St", "line2": "Suite 200"},
            {"line1": "1 Elm Street Ste. 200", "line2": ""},
        ),
        ({"zip": "62704-1234"}, {"zip": "62704"}),
        ({"city": "Saint Louis", "state": "MO"}, {"city": "St. Louis", "state": "mo"}),
        ({"name": "Ada"}, {"name": "Grace"}),
        (
            {"line1": "Münchner Straße 5", "country": "DE", "zip": "80331"},
            {"line1": "munchner strasse 5", "country": "de", "zip": "80 331"},
        ),
    ],
)
def test_household_key_treats_spellings_of_one_address_alike(
    one: dict[str, str], other: dict[str, str]
) -> None:
    """Case, spacing, punctuation, suffixes, unit designators and zip+4 do not split a household."""
    # Given / When two spellings of one address
    # Then their household keys are equal
    assert household_key(ADDRESS | one) == household_key(ADDRESS | other)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ({"line1": "123 Main St"}, {"line1": "124 Main St"}),
        ({"line1": "123 Main St"}, {"line1": "123 Main Ave"}),
        ({"line2": "Apt 4"}, {"line2": "Apt 5"}),
        ({"zip": "62704"}, {"zip": "62705"}),
        ({"country": "US"}, {"country": "CA"}),
    ],
)
def test_household_key_keeps_different_addresses_apart(
    one: dict[str, str], other: dict[str, str]
) -> None:
    """Another number, street type, unit, zip or country is another household."""
    # Given / When two different addresses
    # Then their household keys differ
    assert household_key(ADDRESS | one) != household_key(ADDRESS | other)


# -- idempotent drops ----------------------------------------------------------------------


def test_a_retry_of_the_same_deliveries_reuses_the_file_name(drop_dir: Path) -> None:
    """Retrying a batch rewrites the same drop instead of creating a second one."""
    # Given a drop written at 10:00
    first = DirectMailChannel(drop_dir, clock=at(NOW))
    before = first.send_batch([message(1), message(2)])
    (csv_path, _) = only_drop(drop_dir)

    # When the same deliveries are sent again at 10:05, in another order
    later = DirectMailChannel(drop_dir, clock=at(NOW + timedelta(minutes=5)))
    after = later.send_batch([message(2), message(1)])

    # Then there is still one drop, under the first name, with the same receipts
    assert files(drop_dir) == [csv_path.name, csv_path.name.removesuffix(".csv") + ".manifest.json"]
    assert sorted(o.provider_message_id for o in before if isinstance(o, Receipt)) == sorted(
        o.provider_message_id for o in after if isinstance(o, Receipt)
    )
    # And other deliveries make another drop
    later.send_batch([message(3)])
    assert len(list(drop_dir.glob("*.csv"))) == 2


def test_nothing_exportable_writes_no_file(channel: DirectMailChannel, drop_dir: Path) -> None:
    """A batch whose every message is refused leaves the vendor no empty file."""
    # Given / When a batch of invalid addresses
    outcomes = channel.send_batch([message(1, zip=""), message(2, country="")])

    # Then both are refused and nothing is written
    assert all(isinstance(o, InvalidRecipient) for o in outcomes)
    assert files(drop_dir) == []
    assert channel.send_batch([]) == []


def test_a_batch_mixing_campaign_runs_is_a_bug(channel: DirectMailChannel) -> None:
    """One drop is one campaign run; a mixed batch is refused loudly."""
    # Given / When a batch with two runs, Then it raises
    with pytest.raises(ValueError, match="one campaign run"):
        channel.send_batch([message(1, run_id=1), message(2, run_id=2)])


# -- SFTP ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RecordingTarget(SftpTarget):
    """An SftpTarget that records the order of uploads."""

    uploaded: list[str] = field(default_factory=list, compare=False)

    def upload(self, local_path: Path) -> None:
        self.uploaded.append(local_path.name)
        super().upload(local_path)


@pytest.fixture(scope="module")
def throwaway_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid ed25519 private key no server knows."""
    path = tmp_path_factory.mktemp("keys") / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def target(url: str, **options: Any) -> SftpTarget:
    options.setdefault("timeout", 5.0)
    options.setdefault("backoff", 0.0)
    return SftpTarget.from_url(url, **options)


@pytest.fixture
def inbox(sftp_server: SftpServer) -> Path:
    folder = sftp_server.root / "inbox"
    folder.mkdir()
    return folder


def test_drop_is_uploaded_verified_and_in_order(
    sftp_server: SftpServer, inbox: Path, drop_dir: Path
) -> None:
    """Both files reach the SFTP folder byte-identical, CSV first, 0600, no partial left."""
    # Given a channel uploading to the real sshd
    sftp = RecordingTarget.from_url(sftp_server.url(inbox))
    channel = DirectMailChannel(drop_dir, sftp=sftp, clock=at(NOW))

    # When a batch is dropped
    outcomes = channel.send_batch([message(1), message(2)])

    # Then every message has a receipt
    assert all(isinstance(o, Receipt) for o in outcomes)
    csv_path, manifest_path = only_drop(drop_dir)
    # And the CSV was uploaded before the manifest
    assert isinstance(sftp, RecordingTarget)
    assert sftp.uploaded == [csv_path.name, manifest_path.name]
    # And the remote files equal the local ones, the manifest's sha256 matching the remote CSV
    assert files(inbox) == [csv_path.name, manifest_path.name]
    remote_csv = (inbox / csv_path.name).read_bytes()
    assert csv_path.read_bytes() == remote_csv
    assert manifest_path.read_bytes() == (inbox / manifest_path.name).read_bytes()
    manifest = json.loads((inbox / manifest_path.name).read_text(encoding="utf-8"))
    assert manifest["sha256"] == hashlib.sha256(remote_csv).hexdigest()
    # And the remote files are not world-readable
    assert {stat.S_IMODE((inbox / name).stat().st_mode) for name in files(inbox)} == {0o600}


def test_a_failed_upload_is_transient_and_its_retry_reuses_the_name(
    sftp_server: SftpServer, inbox: Path, drop_dir: Path, closed_port: int
) -> None:
    """After an unreachable server, the retry uploads the same drop; the vendor sees one."""
    # Given a first attempt while the server is unreachable
    down = target(sftp_server.url(inbox).replace(f":{sftp_server.port}/", f":{closed_port}/"))
    first = DirectMailChannel(drop_dir, sftp=down, clock=at(NOW)).send_batch(
        [message(1), message(2, city="")]
    )
    assert isinstance(first[0], TransientDeliveryError)
    assert isinstance(first[1], InvalidRecipient)
    local = files(drop_dir)

    # When the worker retries the transient message once the server is back
    up = target(sftp_server.url(inbox))
    later = NOW + timedelta(minutes=10)
    (retry,) = DirectMailChannel(drop_dir, sftp=up, clock=at(later)).send_batch([message(1)])

    # Then it is accepted, and local and remote hold the one drop under its first name
    assert isinstance(retry, Receipt)
    assert local == files(drop_dir) == files(inbox)


def test_unreachable_server_is_transient_after_retries(
    tmp_path: Path, throwaway_key: Path, closed_port: int
) -> None:
    """A refused connection is retried three times with doubling backoff, then transient."""
    # Given a target on a closed port, recording its backoff sleeps
    sleeps: list[float] = []
    sftp = SftpTarget.from_url(
        f"sftp://vendor@127.0.0.1:{closed_port}/in?key={throwaway_key}",
        timeout=1.0,
        backoff=0.01,
        sleep=sleeps.append,
    )

    # When it uploads, Then it gives up with SftpUnavailable after 4 attempts
    local = tmp_path / "x.csv"
    local.write_text("a\r\n")
    with pytest.raises(SftpUnavailable, match="after 4 attempts"):
        sftp.upload(local)
    assert sleeps == [0.01, 0.02, 0.04]


def test_an_unreachable_server_fails_the_drop_as_transient_and_keeps_the_files(
    drop_dir: Path, throwaway_key: Path, closed_port: int
) -> None:
    """The channel maps a failed upload to TransientDeliveryError for every exported message."""
    # Given a channel whose SFTP server is down
    sftp = target(f"sftp://vendor@127.0.0.1:{closed_port}/in?key={throwaway_key}", retries=1)
    channel = DirectMailChannel(drop_dir, sftp=sftp, clock=at(NOW))

    # When a batch is dropped
    outcomes = channel.send_batch([message(1), message(2)])

    # Then both are transient, with a retry delay, and the local drop stays
    for outcome in outcomes:
        assert isinstance(outcome, TransientDeliveryError)
        assert outcome.detail.startswith("sftp unavailable: could not upload")
        assert outcome.retry_after == DirectMailChannel.sftp_retry_after
    assert len(files(drop_dir)) == 2


def test_a_refused_upload_is_transient_with_a_long_delay(drop_dir: Path, tmp_path: Path) -> None:
    """A configuration problem (here an unreadable key) waits for a person, not for the member."""
    # Given a channel whose SFTP key file is missing
    sftp = target(f"sftp://vendor@127.0.0.1:22/in?key={tmp_path / 'missing'}")
    channel = DirectMailChannel(drop_dir, sftp=sftp, clock=at(NOW))

    # When a batch is dropped
    (outcome,) = channel.send_batch([message(1)])

    # Then the message is transient with the long delay, and the reason names the key
    assert isinstance(outcome, TransientDeliveryError)
    assert outcome.retry_after == DirectMailChannel.sftp_refused_retry_after
    assert "cannot use the private key" in outcome.detail


def test_an_unknown_host_key_is_refused_without_retrying(
    sftp_server: SftpServer, inbox: Path, tmp_path: Path
) -> None:
    """A server whose host key is not in known_hosts gets nothing, and is not retried."""
    # Given a known_hosts file that does not know the server
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    sleeps: list[float] = []
    sftp = target(sftp_server.url(inbox, known_hosts=empty), sleep=sleeps.append)
    local = tmp_path / "a.csv"
    local.write_text("a\r\n")

    # When it uploads, Then it is refused at once, and nothing lands
    with pytest.raises(SftpRefused, match="not in known_hosts"):
        sftp.upload(local)
    assert sleeps == []
    assert files(inbox) == []


def test_a_changed_host_key_is_refused(
    sftp_server: SftpServer, inbox: Path, tmp_path: Path, throwaway_key: Path
) -> None:
    """A server presenting another key than the one recorded may be an impostor: refused."""
    # Given a known_hosts entry for the server's address with a different key
    kind, key = throwaway_key.with_suffix(".pub").read_text().split()[:2]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sftp_server.port} {kind} {key}\n")
    local = tmp_path / "a.csv"
    local.write_text("a\r\n")

    # When it uploads, Then it is refused and nothing lands
    with pytest.raises(SftpRefused, match=r"host key of 127\.0\.0\.1 changed"):
        target(sftp_server.url(inbox, known_hosts=wrong)).upload(local)
    assert files(inbox) == []


def test_a_copy_that_does_not_verify_never_gets_the_final_name(
    sftp_server: SftpServer, inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the read-back sha256 differs, the upload is retried and the file is never renamed."""
    # Given a local checksum that the remote copy cannot match
    import channels.sftp

    real = channels.sftp._size_and_sha256
    monkeypatch.setattr(channels.sftp, "_size_and_sha256", lambda p: (real(p)[0], "0" * 64))
    local = tmp_path / "a.csv"
    local.write_text("a\r\n")

    # When it uploads, Then every attempt fails verification
    with pytest.raises(SftpUnavailable, match="different sha256"):
        target(sftp_server.url(inbox), retries=1).upload(local)
    # And the vendor sees no file under the final name, only the ignored partial
    assert files(inbox) == ["a.csv.partial"]


def test_a_key_the_server_does_not_accept_is_refused(
    sftp_server: SftpServer, inbox: Path, tmp_path: Path, throwaway_key: Path
) -> None:
    """Authentication failure is a configuration problem: refused, not retried."""
    # Given a key the server has never seen
    url = sftp_server.url(inbox).replace(str(sftp_server.key_path), str(throwaway_key))
    local = tmp_path / "a.csv"
    local.write_text("a\r\n")

    # When it uploads, Then it is refused
    with pytest.raises(SftpRefused, match="refused the key"):
        target(url).upload(local)


def test_a_missing_remote_folder_is_refused(sftp_server: SftpServer, tmp_path: Path) -> None:
    """Uploading into a folder that does not exist is refused with the server's reason."""
    # Given a target folder that does not exist
    local = tmp_path / "a.csv"
    local.write_text("a\r\n")
    sftp = target(sftp_server.url(sftp_server.root / "nowhere"))

    # When it uploads, Then it is refused
    with pytest.raises(SftpRefused, match=r"refused a\.csv"):
        sftp.upload(local)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sftp://vendor:s3cret@host/in?key=/k", "carries a password"),
        ("sftp://vendor@host/in?key=/k&password=s3cret", "carries a 'password' parameter"),
        ("sftp://vendor@host/in", r"needs \?key="),
        ("sftp://host/in?key=/k", "must look like"),
        ("ftp://vendor@host/in?key=/k", "must start with sftp://"),
        ("sftp://vendor@host/in?key=/k&mode=fast", "unknown SFTP URL parameter 'mode'"),
        ("sftp://vendor@host:99999/in?key=/k", "invalid port"),
    ],
)
def test_bad_urls_are_refused_without_echoing_secrets(url: str, message: str) -> None:
    """Passwords are never accepted, and the error never repeats one."""
    # Given / When a bad URL is parsed, Then it is refused with a clear message
    with pytest.raises(SftpUrlError, match=message) as caught:
        SftpTarget.from_url(url)
    assert "s3cret" not in str(caught.value)


def test_url_parts_and_a_description_without_secrets() -> None:
    """The URL gives host, port, user, folder, key and known_hosts; describe() shows no query."""
    # Given / When a full URL is parsed
    sftp = SftpTarget.from_url("sftp://vendor@files.example:2222/in/box/?key=/k&known_hosts=/kh")

    # Then its parts are read
    parts = (sftp.host, sftp.port, sftp.username, sftp.folder, sftp.key_path, sftp.known_hosts)
    assert parts == ("files.example", 2222, "vendor", "/in/box", Path("/k"), Path("/kh"))
    assert sftp.describe() == "sftp://vendor@files.example:2222/in/box"
