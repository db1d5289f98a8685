"""Migrations: one head, and the schema they build is the schema the models describe."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from factories import TEST_CONFIG
from sqlalchemy import inspect

from portal import create_app
from portal.extensions import db

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"


def script_directory() -> ScriptDirectory:
    config = Config(str(MIGRATIONS / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config)


def ignored_tables() -> set[str]:
    """IGNORED_TABLES as migrations/env.py defines it (env.py can't be imported: it runs
    the migrations when loaded)."""
    tree = ast.parse((MIGRATIONS / "env.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "IGNORED_TABLES" for t in node.targets):
            return set(ast.literal_eval(node.value))
    raise AssertionError("migrations/env.py no longer defines IGNORED_TABLES")


def include_object(object, name, type_, reflected, compare_to):  # same rule as env.py
    return not (type_ == "table" and name in ignored_tables())


def test_there_is_exactly_one_head():
    heads = script_directory().get_heads()
    assert len(heads) == 1, f"several Alembic heads, merge them: {heads}"


def test_every_revision_descends_from_the_first():
    revisions = list(script_directory().walk_revisions())
    bases = [r.revision for r in revisions if r.down_revision is None]
    assert len(bases) == 1, bases


def test_apscheduler_job_table_is_left_alone():
    assert "apscheduler_jobs" in ignored_tables()


# SQLite's reflection skips indexes on expressions (the Person filters' lower(...)
# indexes), and so autogenerate, with these warnings; PostgreSQL's compares them.
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based")
def test_models_and_migrations_agree(app):
    """The test database was built by `upgrade()`; autogenerate must find nothing to do."""
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={
            "compare_type": True,
            "include_object": include_object,
        })
        differences = compare_metadata(context, db.metadata)
    assert differences == [], (
        "the models and the migrations differ; run `flask --app portal db migrate`:\n"
        + "\n".join(map(repr, differences)))


def test_upgrade_downgrade_upgrade_round_trip(tmp_path):
    """On a fresh SQLite file: every migration can be undone and applied again."""
    from flask_migrate import downgrade, upgrade

    uri = "sqlite:///" + str(tmp_path / "round-trip.sqlite3")
    app = create_app({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": uri})
    with app.app_context():
        try:
            upgrade()
            tables = set(inspect(db.engine).get_table_names()) - {"alembic_version"}
            assert tables == {t.name for t in db.metadata.sorted_tables}
            downgrade(revision="base")
            assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
            upgrade()
            assert set(inspect(db.engine).get_table_names()) - {"alembic_version"} == tables
        finally:
            db.session.remove()
            db.engine.dispose()
