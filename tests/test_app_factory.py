"""create_app: configuration from PORTAL_* variables, the rules for the keys, defaults."""
from __future__ import annotations

import stat

import pytest

from portal import create_app
from portal.app import ConfigurationError


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("PORTAL_SECRET_KEY", "PORTAL_TOKEN_HASH_KEY", "PORTAL_AUDIT_KEY",
                 "PORTAL_SQLALCHEMY_DATABASE_URI", "PORTAL_MAIL_PORT", "PORTAL_BASE_URL",
                 "PORTAL_INSTANCE_PATH", "PORTAL_TESTING", "PORTAL_DEBUG", "PORTAL_DEMO",
                 "PORTAL_SESSION_IDLE_TIMEOUT_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


SECRET = "s" * 32  # the shortest keys production accepts
TOKEN_HASH = "t" * 32
AUDIT = "a" * 32


def production_keys(env) -> None:
    env.setenv("PORTAL_SECRET_KEY", SECRET)
    env.setenv("PORTAL_TOKEN_HASH_KEY", TOKEN_HASH)
    env.setenv("PORTAL_AUDIT_KEY", AUDIT)


def test_refuses_to_start_without_a_secret_key(clean_env, tmp_path):
    with pytest.raises(ConfigurationError, match="PORTAL_SECRET_KEY is not set"):
        create_app({"INSTANCE_PATH": str(tmp_path)})


def test_refuses_to_start_without_a_token_hash_key(clean_env, tmp_path):
    clean_env.setenv("PORTAL_SECRET_KEY", SECRET)
    with pytest.raises(ConfigurationError, match="PORTAL_TOKEN_HASH_KEY is not set"):
        create_app({"INSTANCE_PATH": str(tmp_path)})


def test_refuses_to_start_without_an_audit_key(clean_env, tmp_path):
    clean_env.setenv("PORTAL_SECRET_KEY", SECRET)
    clean_env.setenv("PORTAL_TOKEN_HASH_KEY", TOKEN_HASH)
    with pytest.raises(ConfigurationError, match="PORTAL_AUDIT_KEY is not set"):
        create_app({"INSTANCE_PATH": str(tmp_path)})


@pytest.mark.parametrize("name", ["PORTAL_SECRET_KEY", "PORTAL_TOKEN_HASH_KEY",
                                  "PORTAL_AUDIT_KEY"])
def test_refuses_to_start_with_a_key_shorter_than_32_bytes(clean_env, tmp_path, name):
    production_keys(clean_env)
    clean_env.setenv(name, "x" * 31)
    with pytest.raises(ConfigurationError) as refused:
        create_app({"INSTANCE_PATH": str(tmp_path)})
    assert str(refused.value).startswith(f"{name} is too short (31 bytes): use at least 32")
    clean_env.setenv(name, "é" * 16)  # bytes count, not characters
    assert create_app({"INSTANCE_PATH": str(tmp_path)}).config[name[len("PORTAL_"):]] == "é" * 16


def test_tests_and_debug_runs_get_random_keys_of_their_own(clean_env, tmp_path):
    for flag in ("TESTING", "DEBUG"):
        app = create_app({"INSTANCE_PATH": str(tmp_path), flag: True})
        keys = [app.config[name] for name in ("SECRET_KEY", "TOKEN_HASH_KEY", "AUDIT_KEY")]
        assert all(len(key) >= 48 for key in keys) and len(set(keys)) == 3
    assert not (tmp_path / "secret_key").exists()
    short = create_app({"INSTANCE_PATH": str(tmp_path), "TESTING": True, "SECRET_KEY": "k"})
    assert short.config["SECRET_KEY"] == "k"  # the length rule is production's


def test_settings_come_from_portal_environment_variables(clean_env, tmp_path):
    production_keys(clean_env)
    clean_env.setenv("PORTAL_MAIL_PORT", "2525")
    clean_env.setenv("PORTAL_BASE_URL", "https://gate.example.com")
    clean_env.setenv("PORTAL_SQLALCHEMY_DATABASE_URI", f"sqlite:///{tmp_path}/other.db")
    clean_env.setenv("PORTAL_SESSION_IDLE_TIMEOUT_SECONDS", "600")
    app = create_app({"INSTANCE_PATH": str(tmp_path)})
    assert (app.config["SECRET_KEY"], app.config["TOKEN_HASH_KEY"],
            app.config["AUDIT_KEY"]) == (SECRET, TOKEN_HASH, AUDIT)
    assert app.config["MAIL_PORT"] == 2525  # parsed, not a string
    assert app.config["SESSION_IDLE_TIMEOUT_SECONDS"] == 600
    assert app.config["SESSION_ABSOLUTE_LIFETIME_SECONDS"] == 12 * 3600
    assert app.config["BASE_URL"] == "https://gate.example.com"
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path}/other.db"


def test_sqlite_file_in_the_instance_folder_by_default(clean_env, tmp_path):
    production_keys(clean_env)
    app = create_app({"INSTANCE_PATH": str(tmp_path / "instance")})
    assert app.config["SQLALCHEMY_DATABASE_URI"] == (
        f"sqlite:///{tmp_path}/instance/portal.sqlite3")
    assert (tmp_path / "instance").is_dir()


def test_demo_keeps_private_keys_that_later_commands_reuse(clean_env, tmp_path):
    first = create_app({"INSTANCE_PATH": str(tmp_path), "DEMO": True})
    for name, file_name in (("SECRET_KEY", "secret_key"), ("TOKEN_HASH_KEY", "token_hash_key"),
                            ("AUDIT_KEY", "audit_key")):
        key_file = tmp_path / file_name
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert len(first.config[name]) >= 48
        assert key_file.read_text() == first.config[name]
    assert first.config["SECRET_KEY"] != first.config["TOKEN_HASH_KEY"]
    again = create_app({"INSTANCE_PATH": str(tmp_path)})  # e.g. `flask users create`
    assert again.config["SECRET_KEY"] == first.config["SECRET_KEY"]
    assert again.config["TOKEN_HASH_KEY"] == first.config["TOKEN_HASH_KEY"]
    assert again.config["AUDIT_KEY"] == first.config["AUDIT_KEY"]


def test_production_wsgi_entry_point_refuses_too(clean_env, tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "import portal.wsgi"], capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "PORTAL_INSTANCE_PATH": str(tmp_path)}, timeout=60)
    assert result.returncode != 0
    assert "PORTAL_SECRET_KEY is not set" in result.stderr
