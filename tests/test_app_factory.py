"""create_app: configuration from PORTAL_* variables, the secret-key rule, defaults."""
from __future__ import annotations

import stat

import pytest

from portal import create_app
from portal.app import ConfigurationError


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("PORTAL_SECRET_KEY", "PORTAL_SQLALCHEMY_DATABASE_URI", "PORTAL_MAIL_PORT",
                 "PORTAL_BASE_URL", "PORTAL_INSTANCE_PATH"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_refuses_to_start_without_a_secret_key(clean_env, tmp_path):
    with pytest.raises(ConfigurationError, match="PORTAL_SECRET_KEY is not set"):
        create_app({"INSTANCE_PATH": str(tmp_path)})


def test_settings_come_from_portal_environment_variables(clean_env, tmp_path):
    clean_env.setenv("PORTAL_SECRET_KEY", "from-the-environment")
    clean_env.setenv("PORTAL_MAIL_PORT", "2525")
    clean_env.setenv("PORTAL_BASE_URL", "https://gate.example.com")
    clean_env.setenv("PORTAL_SQLALCHEMY_DATABASE_URI", f"sqlite:///{tmp_path}/other.db")
    app = create_app({"INSTANCE_PATH": str(tmp_path)})
    assert app.config["SECRET_KEY"] == "from-the-environment"
    assert app.config["MAIL_PORT"] == 2525  # parsed, not a string
    assert app.config["BASE_URL"] == "https://gate.example.com"
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path}/other.db"


def test_sqlite_file_in_the_instance_folder_by_default(clean_env, tmp_path):
    clean_env.setenv("PORTAL_SECRET_KEY", "k")
    app = create_app({"INSTANCE_PATH": str(tmp_path / "instance")})
    assert app.config["SQLALCHEMY_DATABASE_URI"] == (
        f"sqlite:///{tmp_path}/instance/portal.sqlite3")
    assert (tmp_path / "instance").is_dir()


def test_demo_keeps_one_private_key_that_later_commands_reuse(clean_env, tmp_path):
    first = create_app({"INSTANCE_PATH": str(tmp_path), "DEMO": True})
    key_file = tmp_path / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(first.config["SECRET_KEY"]) >= 48
    again = create_app({"INSTANCE_PATH": str(tmp_path)})  # e.g. `flask users create`
    assert again.config["SECRET_KEY"] == first.config["SECRET_KEY"]


def test_production_wsgi_entry_point_refuses_too(clean_env, tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "import portal.wsgi"], capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "PORTAL_INSTANCE_PATH": str(tmp_path)}, timeout=60)
    assert result.returncode != 0
    assert "PORTAL_SECRET_KEY is not set" in result.stderr
