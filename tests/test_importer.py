"""Member imports (``store.importer``) on SQLite and PostgreSQL: formats, checks, modes, upserts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from store import (
    Consent,
    ConsentEvent,
    ImportReport,
    Member,
    MemberImportError,
    PointLot,
    RowError,
    import_members,
)
from store.importer import _write


def write_csv(tmp_path: Path, *lines: str, name: str = "members.csv", bom: bool = False) -> Path:
    path = tmp_path / name
    path.write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_jsonl(tmp_path: Path, *objects: Any, name: str = "members.jsonl") -> Path:
    """Each object is dumped as one line; a ``str`` is written as is (blank or broken lines)."""
    lines = [o if isinstance(o, str) else json.dumps(o) for o in objects]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def member(engine: Engine, external_id: str) -> Member:
    with Session(engine) as session:
        return session.scalars(select(Member).where(Member.external_id == external_id)).one()


def count(engine: Engine, model: type[Any]) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def consent_events(engine: Engine) -> list[tuple[str, str, str, str | None]]:
    with Session(engine) as session:
        rows = session.scalars(select(ConsentEvent).order_by(ConsentEvent.id))
        return [(e.channel, e.status, e.source, e.detail) for e in rows]


def messages(report: ImportReport) -> list[str]:
    return [str(e) for e in report.errors]


def test_csv_import_stores_normalized_fields(engine: Engine, tmp_path: Path) -> None:
    """A CSV's members are inserted with phones in E.164, emails and locales normalized."""
    # Given a CSV (with a byte-order mark) of one complete member and one sparse one
    path = write_csv(
        tmp_path,
        "external_id,name,email,phone,locale,time_zone,tier,points_balance,enrolled_at,"
        "purchases_count,last_purchase_at,address_line1,address_city,address_zip,"
        "address_country,consent_sms,consent_email,attributes.color,attributes.store",
        "M1,Ana Silva,Ana@Example.COM,(201) 555-0123,en-US,America/New_York,gold,120,"
        "2024-03-01T09:30:00+02:00,3,2024-05-02T10:00:00Z,1 Main St,Springfield,02139,"
        "us,yes,no,blue,",
        "M2,,,,,,,,,,,,,,,,,,",
        bom=True,
    )

    # When it is imported
    report = import_members(engine, path)

    # Then both are inserted, with values stored as normalized
    assert (
        report.ok,
        report.rows,
        report.inserted,
        report.updated,
        report.skipped,
    ) == (True, 2, 2, 0, 0)
    ana = member(engine, "M1")
    assert (ana.name, ana.email, ana.phone) == ("Ana Silva", "Ana@example.com", "+12015550123")
    assert (ana.locale, ana.time_zone, ana.tier) == ("en_US", "America/New_York", "gold")
    assert (ana.points_balance, ana.purchases_count) == (120, 3)
    assert ana.enrolled_at == datetime(2024, 3, 1, 7, 30, tzinfo=UTC)
    assert ana.last_purchase_at == datetime(2024, 5, 2, 10, 0, tzinfo=UTC)
    assert (
        ana.address_line1,
        ana.address_line2,
        ana.address_zip,
        ana.address_country,
    ) == ("1 Main St", None, "02139", "US")
    assert ana.attributes == {"color": "blue"}
    # And the sparse member gets the columns' defaults
    sparse = member(engine, "M2")
    assert (
        sparse.name,
        sparse.phone,
        sparse.locale,
        sparse.points_balance,
        sparse.attributes,
    ) == (None, None, "en", 0, {})
    # And the two consents are written, each with one event naming the line
    with Session(engine) as session:
        consents = {c.channel: c.status for c in session.scalars(select(Consent))}
    assert consents == {"sms": "opted_in", "email": "opted_out"}
    assert sorted(consent_events(engine), reverse=True) == [
        ("sms", "opted_in", "import:members.csv", "members.csv, line 2"),
        ("email", "opted_out", "import:members.csv", "members.csv, line 2"),
    ]


def test_jsonl_import_stores_attributes_and_lots_once(engine: Engine, tmp_path: Path) -> None:
    """JSON Lines members get their attributes and point lots; importing again adds no lots."""
    # Given a JSON Lines file with a blank line, attributes and point lots
    path = write_jsonl(
        tmp_path,
        {
            "external_id": "J1",
            "phone": "+44 20 7946 0958",
            "points_balance": 300,
            "consent_push": True,
            "attributes": {"color": "red", "kids": 2, "unset": None},
            "lots": [
                {"points": 200, "earned_at": "2024-01-01T00:00:00Z", "expires_at": None},
                {
                    "points": 100,
                    "earned_at": "2024-02-01T12:00:00+01:00",
                    "expires_at": "2025-02-01T00:00:00Z",
                },
            ],
        },
        "",
        {"external_id": 42, "name": "Numeric Id"},
    )

    # When it is imported twice
    first = import_members(engine, path, default_region="GB")
    second = import_members(engine, path, default_region="GB")

    # Then the members are inserted once and updated the second time
    assert (first.rows, first.inserted, first.updated) == (2, 2, 0)
    assert (second.rows, second.inserted, second.updated) == (2, 0, 2)
    j1 = member(engine, "J1")
    assert (j1.phone, j1.points_balance) == ("+442079460958", 300)
    assert j1.attributes == {"color": "red", "kids": 2}
    assert member(engine, "42").name == "Numeric Id"
    # And the lots are appended once, for the member the first import created
    with Session(engine) as session:
        lots = session.scalars(select(PointLot).order_by(PointLot.points)).all()
    assert [(lot.member_id, lot.points, lot.earned_at, lot.expires_at) for lot in lots] == [
        (j1.id, 100, datetime(2024, 2, 1, 11, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC)),
        (j1.id, 200, datetime(2024, 1, 1, tzinfo=UTC), None),
    ]
    # And the consent is recorded once
    assert consent_events(engine) == [
        ("push", "opted_in", "import:members.jsonl", "members.jsonl, line 1")
    ]


def test_each_bad_csv_value_is_named_by_line_and_field(engine: Engine, tmp_path: Path) -> None:
    """Every bad value is reported with its line and field, and nothing is written."""
    # Given a CSV whose rows each carry bad values
    header = (
        "external_id,email,phone,locale,time_zone,enrolled_at,last_purchase_at,"
        "points_balance,purchases_count,address_country,consent_sms"
    )
    path = write_csv(
        tmp_path,
        header,
        "M1,,555-12,,,,,,,,",
        "M2,ana@,,,,,,,,,",
        "M3,,,xx-YY,,,,,,,",
        "M4,,,,Mars/Olympus,,,,,,",
        "M5,,,,,2024-03-01,,,,,",
        "M6,,,,,,2024-03-01T10:00:00,,,,",
        "M7,,,,,yesterday,,,,,",
        "M8,,,,,,,-5,1.5,,",
        "M9,,,,,,,,,UK,",
        "M10,,,,,,,,,,maybe",
        ",a@example.com,,,,,,,,,",
        "x" * 65 + ",,,,,,,,,,",
        "M11,nope,abc,,,,,,,,",
        "M12,1",
        "M13,good@example.com,,,,,,,,,",
    )

    # When it is imported (all-or-nothing)
    report = import_members(engine, path)

    # Then each problem names its line and field, in file order
    assert messages(report) == [
        "members.csv, line 2, field phone: not a valid phone number for region US: '555-12'",
        "members.csv, line 3, field email: not a valid email address: 'ana@'"
        " (There must be something after the @-sign.)",
        "members.csv, line 4, field locale: not a known locale: 'xx-YY'",
        "members.csv, line 5, field time_zone: not an IANA time zone name: 'Mars/Olympus'",
        "members.csv, line 6, field enrolled_at: needs a UTC offset,"
        " e.g. 2024-05-01T09:30:00Z: '2024-03-01'",
        "members.csv, line 7, field last_purchase_at: needs a UTC offset,"
        " e.g. 2024-05-01T09:30:00Z: '2024-03-01T10:00:00'",
        "members.csv, line 8, field enrolled_at: not an ISO-8601 date-time: 'yesterday'",
        "members.csv, line 9, field points_balance: must be a whole number, 0 or more: '-5'",
        "members.csv, line 9, field purchases_count: must be a whole number, 0 or more: '1.5'",
        "members.csv, line 10, field address_country: not an ISO 3166-1 alpha-2 country code:"
        " 'UK' (the United Kingdom is GB)",
        "members.csv, line 11, field consent_sms: must be one of yes, no, true, false, 1, 0,"
        " opted_in, opted_out: 'maybe'",
        "members.csv, line 12, field external_id: is required",
        "members.csv, line 13, field external_id: is longer than 64 characters (65)",
        "members.csv, line 14, field email: not a valid email address: 'nope'"
        " (An email address must have an @-sign.)",
        "members.csv, line 14, field phone: not a valid phone number for region US: 'abc'",
        "members.csv, line 15: has 2 cells but the header has 11 columns",
    ]
    first = report.errors[0]
    assert first == RowError(file="members.csv", line=2, field="phone", problem=first.problem)
    # And the good row was not written either
    assert (report.ok, report.rows, report.inserted, report.skipped) == (False, 15, 0, 15)
    assert count(engine, Member) == 0


def test_each_bad_jsonl_line_is_named_by_line_and_field(engine: Engine, tmp_path: Path) -> None:
    """JSON Lines problems (broken JSON, unknown keys, bad lots) name the physical line."""
    # Given a JSON Lines file with a broken line, a blank line and bad values
    path = write_jsonl(
        tmp_path,
        {"external_id": "J1", "emial": "a@example.com"},
        '{"external_id": "J2",',
        "",
        ["J3"],
        {"external_id": "J4", "attributes": ["a"], "name": {"first": "A"}},
        {"external_id": "J5", "lots": [{"points": 0, "earned_at": "2024-01-01"}]},
        {
            "external_id": "J6",
            "lots": [
                {
                    "points": 5,
                    "earned_at": "2024-01-01T00:00:00Z",
                    "expires_at": "2023-01-01T00:00:00Z",
                    "bonus": 1,
                },
                "lot",
            ],
        },
        {"name": "No Id", "consent_email": "sometimes"},
        {"external_id": "J8", "consent_email": True},
    )

    # When it is imported
    report = import_members(engine, path)

    # Then every problem names its line and field
    assert messages(report) == [
        "members.jsonl, line 1, field emial: unknown field; did you mean 'email'?",
        "members.jsonl, line 2: is not valid JSON:"
        " Expecting property name enclosed in double quotes (column 22)",
        "members.jsonl, line 4: must be a JSON object, not an array",
        "members.jsonl, line 5, field name: must be text or a number, not an object",
        "members.jsonl, line 5, field attributes: must be a JSON object, not an array",
        "members.jsonl, line 6, field lots[0].points: must be a whole number, 1 or more: '0'",
        "members.jsonl, line 6, field lots[0].earned_at: needs a UTC offset,"
        " e.g. 2024-05-01T09:30:00Z: '2024-01-01'",
        "members.jsonl, line 7, field lots[0].bonus: unknown field",
        "members.jsonl, line 7, field lots[0].expires_at: must be after earned_at",
        "members.jsonl, line 7, field lots[1]: must be an object with points, earned_at and"
        " expires_at, not a string",
        "members.jsonl, line 8, field consent_email: must be one of yes, no, true, false, 1, 0,"
        " opted_in, opted_out: 'sometimes'",
        "members.jsonl, line 8, field external_id: is required",
    ]
    # And nothing is written, not even the good last line
    assert (report.rows, report.inserted, count(engine, Member)) == (8, 0, 0)


def test_multiline_quoted_cell_keeps_line_numbers(engine: Engine, tmp_path: Path) -> None:
    """A quoted cell spanning lines does not shift the line numbers of later rows."""
    # Given a CSV whose second row's address spans three lines, then a row of empty cells
    path = write_csv(
        tmp_path,
        "external_id,address_line1,phone",
        "M1,1 Main St,",
        'M2,"Flat 4',
        "Building B",
        '12 High St",',
        ",,",
        "M3,,555-12",
    )

    # When it is imported
    report = import_members(engine, path, mode="skip-bad")

    # Then the bad row after the multi-line cell is reported on its physical line
    # And the empty row is ignored like a blank line
    assert (report.rows, report.inserted) == (3, 2)
    assert messages(report) == [
        "members.csv, line 7, field phone: not a valid phone number for region US: '555-12'"
    ]
    # And the multi-line cell is stored whole
    assert member(engine, "M2").address_line1 == "Flat 4\nBuilding B\n12 High St"


def test_all_or_nothing_writes_nothing_when_one_row_is_bad(engine: Engine, tmp_path: Path) -> None:
    """In all-or-nothing mode one bad row, even in a later chunk, leaves the store untouched."""
    # Given an existing member with an sms consent
    seed = write_csv(tmp_path, "external_id,tier,consent_sms", "M1,silver,yes", name="seed.csv")
    assert import_members(engine, seed).ok
    before = (count(engine, Member), count(engine, Consent), count(engine, ConsentEvent))
    # And a file that updates it and adds members, with a bad row in its last chunk
    path = write_csv(
        tmp_path,
        "external_id,tier,consent_sms",
        "M1,gold,no",
        "M2,gold,yes",
        "M3,gold,yes",
        "M4,gold,perhaps",
    )

    # When it is imported in chunks of two
    report = import_members(engine, path, chunk_size=2)

    # Then nothing at all is written and the bad row is reported
    assert messages(report) == [
        "members.csv, line 5, field consent_sms: must be one of yes, no, true, false, 1, 0,"
        " opted_in, opted_out: 'perhaps'"
    ]
    assert (report.rows, report.inserted, report.updated, report.skipped) == (4, 0, 0, 4)
    assert (count(engine, Member), count(engine, Consent), count(engine, ConsentEvent)) == before
    assert member(engine, "M1").tier == "silver"


def test_skip_bad_writes_only_the_good_rows(engine: Engine, tmp_path: Path) -> None:
    """In skip-bad mode good rows are written chunk by chunk and bad rows are reported."""
    # Given five rows, two of them bad, one bad one in each chunk of two
    path = write_csv(
        tmp_path,
        "external_id,email",
        "M1,a@example.com",
        "M2,bad",
        "M3,c@example.com",
        "M4,",
        "M5,also bad",
    )
    seen: list[int] = []

    # When it is imported with skip-bad
    report = import_members(engine, path, mode="skip-bad", chunk_size=2, progress=seen.append)

    # Then the three good rows are written and the two bad ones skipped
    assert (report.rows, report.inserted, report.updated, report.skipped) == (5, 3, 0, 2)
    assert [m.split(":")[0] for m in messages(report)] == [
        "members.csv, line 3, field email",
        "members.csv, line 6, field email",
    ]
    with Session(engine) as session:
        stored = session.scalars(select(Member.external_id).order_by(Member.external_id)).all()
    assert stored == ["M1", "M3", "M4"]
    # And progress was reported after each chunk
    assert seen == [2, 4, 5]


def test_upsert_updates_only_the_given_fields(engine: Engine, tmp_path: Path) -> None:
    """An existing member gets only the non-empty values of the file; the rest is untouched."""
    # Given a member with a name, email, tier, points and attributes
    seed = write_csv(
        tmp_path,
        "external_id,name,email,tier,points_balance,attributes.color",
        "M1,Ana,ana@example.com,silver,50,blue",
        name="seed.csv",
    )
    import_members(engine, seed)
    # And a file naming the member with a new tier, an empty email and a new attribute
    path = write_csv(tmp_path, "external_id,tier,email,attributes.size", "M1,gold,,L")

    # When it is imported
    report = import_members(engine, path)

    # Then only the tier changes and the attributes are merged
    assert (report.inserted, report.updated) == (0, 1)
    ana = member(engine, "M1")
    assert (
        ana.name,
        ana.email,
        ana.tier,
        ana.points_balance,
    ) == ("Ana", "ana@example.com", "gold", 50)
    assert ana.attributes == {"color": "blue", "size": "L"}


def test_consent_change_is_recorded_once(engine: Engine, tmp_path: Path) -> None:
    """A consent event is written when the status changes, not when the same value comes again."""
    # Given a member who opted in to email by an import
    opt_in = write_csv(tmp_path, "external_id,consent_email", "M1,yes", name="in.csv")
    import_members(engine, opt_in)

    # When the same value is imported again, then an opt-out from another source
    import_members(engine, opt_in)
    opt_out = write_csv(tmp_path, "external_id,consent_email", "", "M1,opted_out", name="out.csv")
    import_members(engine, opt_out, source="crm-sync")
    import_members(engine, opt_out, source="crm-sync")

    # Then there are exactly two events, one per change, naming source and line
    assert consent_events(engine) == [
        ("email", "opted_in", "import:in.csv", "in.csv, line 2"),
        ("email", "opted_out", "crm-sync", "out.csv, line 3"),
    ]
    with Session(engine) as session:
        consent = session.scalars(select(Consent)).one()
    assert (consent.status, consent.source) == ("opted_out", "crm-sync")


def test_blank_consent_leaves_it_unchanged(engine: Engine, tmp_path: Path) -> None:
    """An empty consent cell neither changes the consent nor writes an event."""
    # Given a member opted in to sms
    import_members(engine, write_csv(tmp_path, "external_id,consent_sms", "M1,1", name="a.csv"))

    # When a file leaves the consent blank
    import_members(engine, write_csv(tmp_path, "external_id,consent_sms", "M1,", name="b.csv"))

    # Then the opt-in stands, with its one event
    with Session(engine) as session:
        assert session.scalars(select(Consent.status)).all() == ["opted_in"]
    assert count(engine, ConsentEvent) == 1


def test_unknown_column_refuses_the_file(engine: Engine, tmp_path: Path) -> None:
    """A misspelt column refuses the whole file, naming each unknown column."""
    # Given a CSV with a typo in one column and a column nobody knows
    path = write_csv(tmp_path, "external_id,emial,attributes.ok,shoe_size", "M1,a@example.com,x,9")

    # When it is imported, in either mode
    for mode in ("all-or-nothing", "skip-bad"):
        with pytest.raises(MemberImportError) as caught:
            import_members(engine, path, mode=mode)

        # Then the file is refused, listing the unknown columns
        assert [str(e) for e in caught.value.errors] == [
            "members.csv, line 1, field emial: unknown column; did you mean 'email'?",
            "members.csv, line 1, field shoe_size: unknown column",
        ]
    assert count(engine, Member) == 0


def test_missing_external_id_column_refuses_the_file(engine: Engine, tmp_path: Path) -> None:
    """A CSV without an external_id column is refused before anything is written."""
    # Given a CSV without external_id
    path = write_csv(tmp_path, "name,email", "Ana,ana@example.com")

    # When it is imported
    with pytest.raises(MemberImportError) as caught:
        import_members(engine, path, mode="skip-bad")

    # Then it is refused, naming the missing column
    assert str(caught.value) == (
        "members.csv, line 1, field external_id:"
        " column is missing; every file needs an external_id column"
    )
    assert count(engine, Member) == 0


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "members.xlsx",
            b"external_id\nM1\n",
            "members.xlsx: unknown format '.xlsx'; use one of .csv, .jsonl, .ndjson",
        ),
        (
            "members.csv",
            b"external_id\nM1\nM\xe9\n",
            "members.csv, line 3: is not valid UTF-8 (byte 0xe9); save the file as UTF-8",
        ),
        (
            "members.csv",
            b"",
            "members.csv, line 1: has no header row; the first line must name the columns",
        ),
        (
            "members.csv",
            b'external_id,name\nM1,"Ana\nM2,Bo\n',
            "members.csv, line 2: is not valid CSV (unexpected end of data); check the quotes",
        ),
    ],
    ids=["format", "encoding", "empty", "quoting"],
)
def test_unreadable_file_is_refused(
    engine: Engine, tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    """A file of unknown format, not UTF-8, without a header or badly quoted is refused whole."""
    # Given such a file
    path = tmp_path / name
    path.write_bytes(content)

    # When it is imported in skip-bad mode, which would otherwise write good rows
    with pytest.raises(MemberImportError) as caught:
        import_members(engine, path, mode="skip-bad")

    # Then it is refused with a message naming the problem, and nothing is written
    assert str(caught.value) == message
    assert count(engine, Member) == 0


def test_duplicate_external_id_is_an_error_on_the_later_line(
    engine: Engine, tmp_path: Path
) -> None:
    """A repeated external_id is refused on its later line; in skip-bad the first one is kept."""
    # Given a file naming M1 twice
    path = write_csv(tmp_path, "external_id,tier", "M1,gold", "M2,silver", "M1,bronze")

    # When it is imported with skip-bad
    report = import_members(engine, path, mode="skip-bad")

    # Then the later line is the error and the first one is written
    assert messages(report) == [
        "members.csv, line 4, field external_id: 'M1' already appears on line 2"
    ]
    assert (report.inserted, report.skipped) == (2, 1)
    assert member(engine, "M1").tier == "gold"


def test_error_list_is_capped_with_a_count_of_the_rest(engine: Engine, tmp_path: Path) -> None:
    """A report lists the first hundred problems and counts the others."""
    # Given 150 rows with a bad phone each
    path = write_csv(tmp_path, "external_id,phone", *(f"M{i},1" for i in range(150)))

    # When it is imported
    report = import_members(engine, path)

    # Then 100 errors are listed and 50 counted
    assert (len(report.errors), report.errors_omitted, report.error_count) == (100, 50, 150)
    assert str(report.errors[-1]).split(":")[0] == "members.csv, line 101, field phone"


def test_member_inserted_meanwhile_is_updated(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member another writer inserts between the lookup and the insert is updated instead."""
    # Given a member that the importer's first lookup will not see
    import_members(engine, write_csv(tmp_path, "external_id,tier", "M1,silver", name="a.csv"))
    real_lookup = _write._lock_existing
    calls: list[int] = []

    def blind_first_lookup(*args: Any) -> Any:
        calls.append(1)
        return {} if len(calls) == 1 else real_lookup(*args)

    monkeypatch.setattr(_write, "_lock_existing", blind_first_lookup)

    # When a file naming it is imported
    report = import_members(
        engine, write_csv(tmp_path, "external_id,tier,consent_sms", "M1,gold,yes", name="b.csv")
    )

    # Then the insert conflicts quietly and the member is updated
    assert (report.inserted, report.updated) == (0, 1)
    assert (member(engine, "M1").tier, count(engine, Member)) == ("gold", 1)
    assert count(engine, ConsentEvent) == 1


def test_an_import_never_reverses_a_members_own_opt_out(engine, tmp_path):
    """consent_sms=yes in a file does not undo a STOP reply; it does undo an imported opt-out."""
    from sqlalchemy import select

    from store import Consent, Member
    from store.importer import import_members

    # Given two members who opted out of SMS: one by STOP, one in an earlier import
    first = tmp_path / "first.csv"
    first.write_text("external_id,phone,consent_sms\nS1,+14155550101,no\nS2,+14155550102,no\n")
    import_members(engine, first)
    with engine.begin() as conn:
        s1 = conn.scalar(select(Member.id).where(Member.external_id == "S1"))
        conn.execute(
            Consent.__table__.update().where(Consent.member_id == s1).values(source="sms-keyword")
        )
    # When a later file says both opted in
    second = tmp_path / "second.csv"
    second.write_text("external_id,consent_sms\nS1,yes\nS2,yes\n")
    import_members(engine, second)
    # Then the STOP stands and the imported opt-out is reversed
    with engine.connect() as conn:
        got = dict(
            conn.execute(
                select(Member.external_id, Consent.status).join(
                    Consent, Consent.member_id == Member.id
                )
            ).all()
        )
    assert got == {"S1": "opted_out", "S2": "opted_in"}
