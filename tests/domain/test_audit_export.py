"""The export format (portal.domain.audit_export): the columns, one line per event that is
always the same bytes, cells a spreadsheet would run made text, and an "Action" list that
knows every action the portal records."""
from __future__ import annotations

import csv
import io
import json
import random
import re
from pathlib import Path

import pytest

from portal.domain.audit_export import (ACTIONS, COLUMNS, CsvWriter, ExportRow, JsonLines,
                                        csv_cells, details_text, head_line, json_line,
                                        neutralise)

PORTAL = Path(__file__).resolve().parents[2] / "portal"
ROW = ExportRow(7, "2026-12-01T10:15:30.123000Z", "ann@example.com", "request.decided",
                "session_request:3", 2, "192.0.2.7", "success",
                '{"device": "WIN-0859G9I39J0", "note": "caf\\u00e9"}', "ab" * 32)


def test_the_columns_are_the_designs():
    assert ",".join(COLUMNS) == ("seq,occurred_at,actor,action,target,department,client_ip,"
                                 "outcome,details,hash")
    assert ExportRow._fields == COLUMNS


def test_a_json_line_is_one_object_with_the_columns_in_order():
    line = json_line(ROW)
    assert line.endswith("}\n") and line.count("\n") == 1 and line.isascii()
    item = json.loads(line)
    assert list(item) == list(COLUMNS)
    assert item["details"] == {"device": "WIN-0859G9I39J0", "note": "café"}
    assert item["seq"] == 7 and item["department"] == 2 and item["hash"] == "ab" * 32
    assert json.loads(json_line(ROW._replace(hash=None, department=None)))["hash"] is None


@pytest.mark.parametrize("text", ['line\nbreak', 'quote " and \\ backslash', "\u2028",
                                  "tab\t", "\x00"])
def test_text_never_breaks_the_line(text):
    line = json_line(ROW._replace(actor=text, outcome=text))
    assert line.count("\n") == 1
    assert json.loads(line)["actor"] == text


def test_details_with_a_line_break_are_put_on_one_line():
    assert details_text('{"a":\n 1}') == '{"a":1}'
    assert details_text(None) == "{}"


def test_the_chain_head_line():
    assert json.loads(head_line(12, "cd" * 32)) == {"chain_head": {"seq": 12, "hash": "cd" * 32}}


@pytest.mark.parametrize("cell, shown", [
    ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"), ("+1", "'+1"), ("-2+3", "'-2+3"),
    ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("ann@example.com", "ann@example.com"), ("", ""), ("a=b", "a=b")])
def test_cells_that_would_run_as_formulas_are_text(cell, shown):
    assert neutralise(cell) == shown


def test_csv_rows_neutralise_every_text_cell():
    row = ROW._replace(actor="=cmd", action="+x", target="-y", client_ip="@z", outcome="=o",
                       details="=d")
    cells = csv_cells(row)
    assert [cells[i] for i in (2, 3, 4, 6, 7, 8)] == ["'=cmd", "'+x", "'-y", "'@z", "'=o", "'=d"]
    writer = CsvWriter()
    text = writer.rows(header=True) + writer.rows([ROW, row._replace(hash=None)])
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == list(COLUMNS) and rows[1][0] == "7" and rows[2][9] == ""
    assert json.loads(rows[1][8])["note"] == "café"


ODD_ROWS = [ROW, ROW._replace(hash=None, department=None),
            ROW._replace(actor="=cmd", action="+x", target="-y", client_ip="@z", outcome="=o",
                         details="=d"),
            *(ROW._replace(seq=8 + n, actor=text, target=text, outcome=text)
              for n, text in enumerate(['line\nbreak', 'quote " and \\ backslash', "\u2028",
                                        "caf\u00e9", "\x00", ""]))]


def test_an_exports_lines_are_json_lines_bytes_whatever_repeats():
    """The export writes a batch at a time, remembering the texts it encoded; `audit
    verify --export` renders one line at a time: the bytes must be the same."""
    writer = JsonLines()
    rows = [tuple(row) for row in ODD_ROWS * 3]  # the export passes plain tuples
    assert writer.lines(rows[:5]) + writer.lines(rows[5:]) == "".join(map(json_line, ODD_ROWS * 3))


def test_an_exports_csv_batches_are_the_cells_csv_cells_gives():
    expected = io.StringIO()
    csv.writer(expected).writerows(map(csv_cells, ODD_ROWS * 2))
    writer = CsvWriter()
    assert (writer.rows([tuple(row) for row in ODD_ROWS])
            + writer.rows(ODD_ROWS)) == expected.getvalue()


def test_the_csv_writer_quotes_exactly_as_the_csv_module_does():
    """Cells of every awkward shape, seeded at random: the hand-built rows must be the
    csv module's bytes for csv_cells, or a spreadsheet (and a diff) would tell them apart."""
    rng = random.Random(20261201)
    alphabet = [",", '"', "\r", "\n", "'", "=", "+", "-", "@", "\t", " ", "a", "Z", "7",
                "é", "\u2028", "{", "}", ":", ";"]

    def text():
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))

    rows = [ROW._replace(seq=n, actor=text(), action=text(), target=text(),
                         client_ip=text(), outcome=text(),
                         details=rng.choice([None, "{}", json.dumps({text(): text()}),
                                             json.dumps({"n": [text()]}, indent=1)]),
                         department=rng.choice([None, 3]), hash=rng.choice([None, "ab" * 32]))
            for n in range(400)]
    expected = io.StringIO()
    csv.writer(expected).writerows(map(csv_cells, [
        row._replace(details=details_text(row.details)) for row in rows]))
    assert CsvWriter().rows([tuple(row) for row in rows]) == expected.getvalue()


def test_the_action_field_knows_every_action_the_portal_records():
    source = "\n".join(p.read_text(encoding="utf-8") for p in PORTAL.rglob("*.py"))
    recorded = set(re.findall(
        r'"((?:auth|user|member|token|request|session|device|prompt|link|otp|email|'
        r'department|settings|exclusion|group|client_session|audit|approval|preapproval)'
        r'\.[a-z_]+)"', source))
    assert recorded - set(ACTIONS) == set()
    assert list(ACTIONS) == sorted(ACTIONS)
