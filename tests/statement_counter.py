"""Counting the SQL statements a request sends: a `before_cursor_execute` listener on the
engine, on while a `with` block runs. Used by the statement-count test
(tests/api/test_statement_counts.py) and the benchmark (tests/benchmarks/bench_statements.py).

What the audit trail sends is kept apart (`audit`: any statement on an audit_* table), so
a hot path's budget counts only its own statements (`own`). Within a request that is only
appending: `record_event` adds the event and the unit of work's flush sends plain
INSERTs INTO audit_events (one batch on PostgreSQL; on SQLite, whose driver can't batch
an INSERT that returns the new seqs, up to one per event), with no lock and no read or
write of the chain head (audit_head). Sealing — hashing events in seq order and
moving the head — is a separate scheduler job (portal/services/audit.py `seal_pending`,
run by portal/jobs.py `seal_audit`), outside any request's count."""
from __future__ import annotations

import re

from sqlalchemy import event

_AUDIT_TABLE = re.compile(r"\baudit_\w+")
_NOTIFY = re.compile(r"^SELECT pg_notify\(", re.IGNORECASE)


def is_audit_statement(statement: str) -> bool:
    """Whether the statement reads or writes the audit trail's tables."""
    return _AUDIT_TABLE.search(statement) is not None


class StatementLog:
    """Every statement sent through `engine` while the block runs (one executemany
    counts once: it is one statement the driver sends)."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.statements: list[str] = []

    def _record(self, conn, cursor, statement, parameters, context, executemany) -> None:
        self.statements.append(" ".join(statement.split()))

    def __enter__(self) -> StatementLog:
        self.statements = []
        event.listen(self.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)

    @property
    def count(self) -> int:
        return len(self.statements)

    @property
    def audit(self) -> list[str]:
        return [s for s in self.statements if is_audit_statement(s)]

    @property
    def notifications(self) -> list[str]:
        """PostgreSQL only: the one `SELECT pg_notify(…)` a commit that changed a request or
        queued mail sends, to wake long-polls and the outbox (portal/notifier.py)."""
        return [s for s in self.statements if _NOTIFY.match(s)]

    @property
    def own(self) -> list[str]:
        """The statements that are neither the audit trail's nor the commit's NOTIFY."""
        return [s for s in self.statements
                if not is_audit_statement(s) and not _NOTIFY.match(s)]

    @property
    def writes(self) -> list[str]:
        return [s for s in self.statements
                if s.split(" ", 1)[0].upper() in ("INSERT", "UPDATE", "DELETE")]

    def listing(self) -> str:
        return "\n".join(f"{i:3d}. {s[:160]}" for i, s in enumerate(self.statements, 1))
