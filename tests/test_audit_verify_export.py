"""`flask --app portal audit verify --export FILE`: an exported JSON Lines file checked
against the chain in the database. Accepted as exported; rejected, naming the first bad
line (and its event), after one changed byte anywhere, a deleted line, a head the chain
does not hold, or when the file is not JSON Lines at all."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from factories import NOW, sealed_trail_check
from sqlalchemy import func, insert, select, text

from portal.clock import FixedClock
from portal.extensions import db
from portal.models import AuditEvent
from portal.services import devices
from portal.services.actors import CLI
from portal.services.audit import _values as audit_values
from web.session_logs_setup import DEVICE, OTHER_DEVICE, build_world, remote_session


@pytest.fixture
def app_config():
    return {"CLOCK": FixedClock(NOW + timedelta(days=2))}


@pytest.fixture
def world(make, auth):
    w = build_world(make)
    remote_session("tech@example.com", DEVICE, NOW + timedelta(minutes=5),
                   ended=NOW + timedelta(minutes=9))
    remote_session("tech2@example.com", OTHER_DEVICE, NOW + timedelta(days=1))
    sealed_trail_check()
    auth.login("auditor@example.com")
    return w


def exported(client, tmp_path, department, name="export.jsonl", **args) -> bytes:
    response = client.get(f"/departments/{department.id}/audit/export.jsonl",
                          query_string=args)
    assert response.status_code == 200
    data = response.get_data()
    (tmp_path / name).write_bytes(data)
    return data


def verify(runner, path):
    result = runner.invoke(args=["audit", "verify", "--export", str(path)])
    db.session.expire_all()
    return result


def rejected(runner, path, *expected: str) -> str:
    result = verify(runner, path)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.exception is None or \
        isinstance(result.exception, SystemExit)
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("Export rejected: ")
    for part in expected:
        assert part in line, line
    return line


def lines_of(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def test_an_export_is_accepted_as_it_was_exported(client, runner, world, tmp_path):
    data = exported(client, tmp_path, world.qa)
    events = len(lines_of(data)) - 1
    result = verify(runner, tmp_path / "export.jsonl")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        f"Export intact: {events} event(s) match the audit trail, and its chain head "
        f"(event #{json.loads(lines_of(data)[-1])['chain_head']['seq']}) is part of the "
        "chain.")


def test_a_filtered_export_and_one_made_before_sealing_are_accepted_later(
        client, runner, world, tmp_path):
    exported(client, tmp_path, world.qa, "filtered.jsonl", action="session.started",
             device=OTHER_DEVICE)
    devices.create_group(department=world.qa, name="Night shift", actor=CLI, now=NOW)
    db.session.commit()  # not sealed when exported: its hash is null
    data = exported(client, tmp_path, world.qa, "fresh.jsonl")
    assert json.loads(lines_of(data)[0])["hash"] is None
    sealed_trail_check()  # sealed since; more events follow
    devices.create_group(department=world.qa, name="Day shift", actor=CLI, now=NOW)
    db.session.commit()
    sealed_trail_check()
    assert verify(runner, tmp_path / "filtered.jsonl").exit_code == 0
    result = verify(runner, tmp_path / "fresh.jsonl")
    assert result.exit_code == 0, result.output
    assert "exported before sealing" in result.output


def _change_byte(data: bytes, line: int, old: bytes, new: bytes) -> bytes:
    lines = lines_of(data)
    assert old in lines[line]
    lines[line] = lines[line].replace(old, new, 1)
    return b"".join(lines)


def test_one_changed_byte_is_found_and_named(client, runner, world, tmp_path):
    data = exported(client, tmp_path, world.qa)
    lines = lines_of(data)
    index = next(i for i, raw in enumerate(lines) if b'"WIN-0859G9I39J0"' in raw)
    seq = json.loads(lines[index])["seq"]
    digest = json.loads(lines[1])["hash"]
    head = json.loads(lines[-1])["chain_head"]
    flip = "0" if head["hash"][-1] != "0" else "1"
    cases = [
        # a detail's value
        (_change_byte(data, index, b"WIN-0859G9I39J0", b"WIN-0859G9I39J1"),
         (f"line {index + 1} (event #{seq})", "edited")),
        # a hash
        (_change_byte(data, 1, digest[:8].encode(), (digest[:7] + "f").encode()
                      if digest[7] != "f" else (digest[:7] + "e").encode()),
         (f"line 2 (event #{json.loads(lines[1])['seq']})", "hash")),
        # the actor, the time
        (_change_byte(data, 0, b'"actor":"', b'"actor":" '), ("line 1 (event #",)),
        (_change_byte(data, 0, b'.', b','), ("line 1",)),
        # the chain head's hash, and its seq (ahead of the database: a truncation)
        (_change_byte(data, len(lines) - 1, head["hash"].encode(),
                      (head["hash"][:-1] + flip).encode()),
         (f"line {len(lines)} (chain head)", f"not the chain hash of event #{head['seq']}")),
        (_change_byte(data, len(lines) - 1, f'"seq":{head["seq"]}'.encode(),
                      f'"seq":{head["seq"] + 500}'.encode()),
         (f"line {len(lines)} (chain head)", "truncated")),
        # a line end
        (data.replace(b"\n", b"\r\n", 1), ("line 1 (event #", "edited")),
    ]
    for number, (changed, expected) in enumerate(cases):
        assert len(changed) in (len(data), len(data) + 1)
        path = tmp_path / f"changed-{number}.jsonl"
        path.write_bytes(changed)
        rejected(runner, path, *expected)


def test_a_deleted_line_is_found(client, runner, world, tmp_path):
    data = exported(client, tmp_path, world.qa)
    lines = lines_of(data)
    seqs = [json.loads(raw)["seq"] for raw in lines[:-1]]
    for drop, expected in [
            (0, (f"line 1 (event #{seqs[1]}): event #{seqs[0]} is missing",)),
            (3, (f"line 4 (event #{seqs[4]}): event #{seqs[3]} is missing",)),
            (len(lines) - 2, (f"event #{seqs[-1]} is missing before the chain head",)),
            (len(lines) - 1, ("ends without its chain head line",))]:
        path = tmp_path / f"dropped-{drop}.jsonl"
        path.write_bytes(b"".join(lines[:drop] + lines[drop + 1:]))
        rejected(runner, path, *expected)
    path = tmp_path / "moved.jsonl"  # two lines swapped
    path.write_bytes(b"".join([lines[1], lines[0], *lines[2:]]))
    rejected(runner, path, f"line 1 (event #{seqs[1]}): event #{seqs[0]} is missing",
             "moved")


def test_a_head_the_database_no_longer_reaches_is_a_truncation(client, runner, world,
                                                                tmp_path):
    exported(client, tmp_path, world.qa)
    db.session.execute(text("DELETE FROM audit_events WHERE seq = (SELECT MAX(seq) FROM "
                            "audit_events WHERE chain_index IS NOT NULL)"))
    db.session.commit()
    rejected(runner, tmp_path / "export.jsonl", "(chain head)", "truncated")


@pytest.mark.parametrize("content, expected", [
    (b"", "the file is empty"),
    (b"seq,occurred_at,actor\n1,2,3\n", "line 1 is not JSON"),
    (b'{"seq": 1}\n', "line 1 is not an exported event"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "line 1 is not UTF-8 text"),
    (b'{"chain_head": {"seq": 0, "hash": "' + b"0" * 64 + b'"}}\n{"a": 1}\n',
     "line 2: nothing may follow the chain head"),
    (b"[1, 2]\n", "line 1 is not an exported event"),
    (b'{"chain_head": {"seq": "7"}}\n', "line 1 (chain head): must be"),
    (b"\n\n", "line 1 is not JSON"),
])
def test_a_file_that_is_not_json_lines_gets_a_clear_message(runner, world, tmp_path,
                                                            content, expected):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    rejected(runner, path, expected)


def test_a_missing_file_is_a_usage_error(runner, world, tmp_path):
    result = verify(runner, tmp_path / "nowhere.jsonl")
    assert result.exit_code == 2 and "does not exist" in result.output


def _event_with_seq(seq: int, department_id: int, name: str) -> None:
    """An event inserted with a seq of its own choosing: what a transaction that took its
    seq before the export began, and committed after it, leaves behind."""
    values = audit_values(actor=CLI, action="device_group.created", target_type="group",
                          target_id=name, now=NOW, department_id=department_id,
                          details={"name": name})
    db.session.execute(insert(AuditEvent), [{**values, "seq": seq}])
    db.session.commit()


def test_an_event_committed_after_the_export_read_past_its_seq_is_not_a_deleted_line(
        client, runner, world, tmp_path):
    newest = db.session.scalar(select(func.max(AuditEvent.seq)))
    _event_with_seq(newest + 10, world.qa.id, "Taken late")  # seqs newest+1…+9 not seen yet
    sealed_trail_check()
    data = exported(client, tmp_path, world.qa)
    _event_with_seq(newest + 5, world.qa.id, "Committed late")  # below the export's newest
    path = tmp_path / "export.jsonl"
    for _ in range(2):  # not sealed yet, then sealed after the export's chain head
        result = verify(runner, path)
        assert result.exit_code == 0, result.output
        assert ("1 event(s) the filter now finds were sealed after the export's chain head"
                in result.output)
        sealed_trail_check()
    # an event sealed at or before the head is still a deleted line when it is left out
    lines = lines_of(data)
    index = next(i for i, raw in enumerate(lines) if b"Taken late" in raw)
    path.write_bytes(b"".join(lines[:index] + lines[index + 1:]))
    rejected(runner, path, f"event #{newest + 10} is missing")
