"""Looking a directory user up (portal.services.directory) in a real OpenLDAP slapd
(tests/directory_server.py): the mail address of exactly one entry; otherwise "not in
the directory", whose message suggests emergency access; names checked before any
search and escaped in the filter; the PORTAL_LDAP_* settings as the environment gives
them."""
from __future__ import annotations

import pytest
from directory_server import BIND_PASSWORD, free_port
from factories import TEST_CONFIG

from portal import create_app
from portal.domain.errors import BadRequestError, DirectoryUnavailableError, NotInDirectoryError
from portal.services.directory import MAX_USERNAME_LENGTH, find_mail, is_configured

AD_FILTER = "(&(objectClass=user)(sAMAccountName={username}))"


def not_in_directory(username, config) -> str:
    with pytest.raises(NotInDirectoryError) as raised:
        find_mail(username, config=config)
    return raised.value.message


@pytest.mark.parametrize("username", ["jsmith", "JSmith", "JSMITH"])
def test_a_directory_user_gets_their_mail_address(directory, username):
    assert find_mail(username, config=directory.config) == "j.smith@example.com"


@pytest.mark.parametrize("user_filter", ["(uid={username})", AD_FILTER])
def test_other_user_filters(directory, user_filter):
    config = {**directory.config, "LDAP_USER_FILTER": user_filter}
    assert find_mail("jsmith", config=config) == "j.smith@example.com"


def test_without_a_bind_dn_the_lookup_binds_anonymously(directory):
    config = {**directory.config, "LDAP_BIND_DN": None, "LDAP_BIND_PASSWORD": None}
    assert find_mail("jsmith", config=config) == "j.smith@example.com"


@pytest.mark.parametrize("username, why", [
    ("nobody", "no such entry"),
    ("nomail", "an entry without a mail attribute"),
    ("badmail", "a mail attribute that is no address"),
    ("twin", "two entries with that name (ambiguous)"),
])
def test_not_in_directory_suggests_emergency_access(directory, username, why):
    message = not_in_directory(username, directory.config)
    assert message == (f"No directory user “{username}” with an email address. "
                       "Ask for emergency access instead."), why


@pytest.mark.parametrize("username, mail", [
    ("*", "star@example.com"),
    ("o*dd(name)\\x", "odd@example.com"),
    ("jürgen", "juergen@example.com"),
])
def test_names_made_of_filter_syntax_match_only_themselves(directory, username, mail):
    """Escaped per RFC 4515, "*" is a star, not "everyone"."""
    assert find_mail(username, config=directory.config) == mail


INJECTIONS = [
    "jsmit*",                      # unescaped: a wildcard matching jsmith
    "*mith",
    "j*h",
    "\\6asmith",                   # unescaped: \6a is "j", i.e. jsmith
    "jsmith)(objectClass=*",       # unescaped: closes the value and adds a term
    "*)(uid=*",
    "*)(|(sAMAccountName=jsmith",
    "x)(sAMAccountName=jsmith",
    "jsmith\\",
    "(",
    ")",
]


@pytest.mark.parametrize("user_filter", ["(uid={username})", AD_FILTER])
@pytest.mark.parametrize("username", INJECTIONS)
def test_filter_syntax_in_a_name_finds_nobody(directory, user_filter, username):
    config = {**directory.config, "LDAP_USER_FILTER": user_filter}
    not_in_directory(username, config)


@pytest.mark.parametrize("username", [
    "", "   ", "x" * (MAX_USERNAME_LENGTH + 1), "js\x00mith", "jsmith\n", "js\tmith",
    "js\u202emith", None, 42, ["jsmith"],
])
def test_bad_names_are_refused_before_any_search(username):
    """A 400, also with a directory that isn't there: nothing was sent to it."""
    config = {"LDAP_URL": f"ldap://127.0.0.1:{free_port()}"}
    with pytest.raises(BadRequestError) as raised:
        find_mail(username, config=config)
    assert raised.value.message == "The user name must be 1 to 256 printable characters."


def test_the_longest_name_is_looked_up(directory):
    not_in_directory("x" * MAX_USERNAME_LENGTH, directory.config)


# --- configuration -------------------------------------------------------------------


def test_no_directory_configured():
    assert not is_configured({"LDAP_URL": None})
    assert not is_configured({"LDAP_URL": "  "})
    assert is_configured({"LDAP_URL": "ldap://dc1.example.test"})
    with pytest.raises(DirectoryUnavailableError) as raised:
        find_mail("jsmith", config={"LDAP_URL": None})
    assert raised.value.message == "No directory is configured."


@pytest.mark.parametrize("change, logged", [
    ({"LDAP_URL": "http://127.0.0.1:389"}, "must be ldap://"),
    ({"LDAP_URL": "127.0.0.1"}, "must be ldap://"),
    ({"LDAP_URL": "ldap://127.0.0.1:99999"}, "malformed"),
    ({"LDAP_URL": "ldap://portal:hunter2@127.0.0.1"}, "must not hold credentials"),
    ({"LDAP_START_TLS": "maybe"}, "PORTAL_LDAP_START_TLS"),
    ({"LDAP_USER_FILTER": "(sAMAccountName=jsmith)"}, "has no {username}"),
    ({"LDAP_TIMEOUT_SECONDS": "soon"}, "PORTAL_LDAP_TIMEOUT_SECONDS"),
    ({"LDAP_TIMEOUT_SECONDS": 0}, "PORTAL_LDAP_TIMEOUT_SECONDS"),
    ({"LDAP_TIMEOUT_SECONDS": -1}, "PORTAL_LDAP_TIMEOUT_SECONDS"),
])
def test_settings_that_make_no_sense_are_unavailable_and_logged(directory, caplog, change,
                                                                logged):
    with pytest.raises(DirectoryUnavailableError) as raised:
        find_mail("jsmith", config={**directory.config, **change})
    assert raised.value.message == ("The directory settings are not valid. "
                                    "Ask an administrator to check them.")
    assert logged in caplog.text
    assert "hunter2" not in caplog.text


@pytest.mark.parametrize("change", [
    {"LDAP_BASE_DN": "dc=elsewhere,dc=test"},              # no such base
    {"LDAP_USER_FILTER": "(sAMAccountName={username}"},    # not a filter
    {"LDAP_CA_FILE": "/nonexistent/ca.pem", "LDAP_START_TLS": True},
])
def test_a_directory_that_cannot_answer_as_configured_is_unavailable(directory, change):
    """Misconfiguration is the portal's problem: not a "you are not in the directory"."""
    with pytest.raises(DirectoryUnavailableError):
        find_mail("jsmith", config={**directory.config, **change})


def app_from_environment(monkeypatch, tmp_path, environment: dict[str, str]):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return create_app({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": "sqlite://",
                       "INSTANCE_PATH": str(tmp_path)})


def environment_of(config: dict) -> dict[str, str]:
    return {f"PORTAL_{name}": str(value) for name, value in config.items()
            if value is not None}


def test_the_app_reads_the_directory_from_the_environment(directory, monkeypatch, tmp_path):
    environment = {**environment_of(directory.start_tls_config),
                   "PORTAL_LDAP_URL": f"ldap://127.0.0.1:{free_port()}  {directory.url} ",
                   "PORTAL_LDAP_START_TLS": "true", "PORTAL_LDAP_TIMEOUT_SECONDS": "2"}
    app = app_from_environment(monkeypatch, tmp_path, environment)
    with app.app_context():
        assert is_configured()
        assert find_mail("jsmith") == "j.smith@example.com"
        assert BIND_PASSWORD == app.config["LDAP_BIND_PASSWORD"]


@pytest.mark.parametrize("value, is_tls", [
    ("true", True), ("True", True), ("1", True), ("yes", True), ("on", True),
    ("false", False), ("False", False), ("0", False), ("no", False), ("off", False), ("", False),
])
def test_start_tls_flag_as_the_environment_spells_it(directory, monkeypatch, tmp_path, value,
                                                     is_tls):
    """Against a CA that signed nothing here: StartTLS fails the certificate check,
    plain LDAP doesn't check anything."""
    environment = {**environment_of(directory.config), "PORTAL_LDAP_START_TLS": value,
                   "PORTAL_LDAP_CA_FILE": directory.other_ca_file}
    app = app_from_environment(monkeypatch, tmp_path, environment)
    with app.app_context():
        if is_tls:
            with pytest.raises(DirectoryUnavailableError):
                find_mail("jsmith")
        else:
            assert find_mail("jsmith") == "j.smith@example.com"
