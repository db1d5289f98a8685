"""When the directory can't answer (portal.services.directory against a real slapd):
down, silent, refusing the portal's bind, or failing the certificate check — each is
"unavailable" (503), within PORTAL_LDAP_TIMEOUT_SECONDS, with nothing secret in the
message or the log. A pool skips a server that is down."""
from __future__ import annotations

import socket
import threading
import time

import pytest
from directory_server import BIND_DN, BIND_PASSWORD, free_port

from portal.domain.errors import DirectoryUnavailableError
from portal.services.directory import find_mail

UNAVAILABLE = ("The directory can't be reached right now. Try again in a few minutes, "
               "or ask for emergency access.")
BUDGET = 2
SLACK = 1.5  # a loaded CI machine


def unavailable(config, username="jsmith") -> tuple[str, float]:
    started = time.monotonic()
    with pytest.raises(DirectoryUnavailableError) as raised:
        find_mail(username, config=config)
    return raised.value.message, time.monotonic() - started


def closed_port_url() -> str:
    return f"ldap://127.0.0.1:{free_port()}"


@pytest.fixture
def silent_server():
    """Accepts connections and reads what is sent, and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    listener.close()


# --- down, silent, slow --------------------------------------------------------------


def test_directory_stopped_mid_run_is_unavailable_at_once_and_back_when_it_is(directory):
    config = {**directory.config, "LDAP_TIMEOUT_SECONDS": BUDGET}
    assert find_mail("jsmith", config=config) == "j.smith@example.com"
    directory.stop()
    message, took = unavailable(config)
    assert message == UNAVAILABLE
    assert took < BUDGET
    directory.start()
    assert find_mail("jsmith", config=config) == "j.smith@example.com"


def test_a_directory_that_accepts_and_never_answers_takes_the_budget_and_no_more(directory):
    directory.pause()
    message, took = unavailable({**directory.config, "LDAP_TIMEOUT_SECONDS": BUDGET})
    assert message == UNAVAILABLE
    assert took < BUDGET + SLACK


@pytest.mark.parametrize("scheme, is_start_tls", [
    ("ldap", False),   # stuck in the bind
    ("ldap", True),    # stuck in StartTLS
    ("ldaps", False),  # stuck in the TLS handshake
])
def test_a_silent_server_at_each_step(directory, silent_server, scheme, is_start_tls):
    config = {**directory.config, "LDAP_URL": f"{scheme}://127.0.0.1:{silent_server}",
              "LDAP_START_TLS": is_start_tls, "LDAP_CA_FILE": directory.ca_file,
              "LDAP_TIMEOUT_SECONDS": BUDGET}
    _, took = unavailable(config)
    assert took < BUDGET + SLACK


def test_a_fraction_of_a_second_budget_is_kept(directory):
    """Not rounded up to the whole second that ldap3's receive timeout takes."""
    directory.pause()
    _, took = unavailable({**directory.config, "LDAP_TIMEOUT_SECONDS": 0.3})
    assert took < 0.8


# --- pools ---------------------------------------------------------------------------


def test_a_pool_skips_a_server_that_is_down(directory):
    config = {**directory.config, "LDAP_URL": f"{closed_port_url()} {directory.url}",
              "LDAP_TIMEOUT_SECONDS": BUDGET}
    started = time.monotonic()
    assert find_mail("jsmith", config=config) == "j.smith@example.com"
    assert time.monotonic() - started < 1


def test_a_pool_uses_its_first_server_that_is_up(directory):
    config = {**directory.config, "LDAP_URL": f"{directory.url} {closed_port_url()}"}
    assert find_mail("jsmith", config=config) == "j.smith@example.com"


def test_a_pool_with_every_server_down_is_unavailable_at_once():
    config = {"LDAP_URL": f"{closed_port_url()} {closed_port_url()} {closed_port_url()}",
              "LDAP_TIMEOUT_SECONDS": BUDGET}
    message, took = unavailable(config)
    assert message == UNAVAILABLE
    assert took < 1


# --- the portal's bind ---------------------------------------------------------------


def test_a_refused_bind_is_unavailable_and_tells_no_secret(directory, caplog):
    wrong = "wrong-password-Zt8q"
    message, _ = unavailable({**directory.config, "LDAP_BIND_PASSWORD": wrong})
    assert message == UNAVAILABLE
    assert "invalidCredentials" in caplog.text  # the operator learns why
    for secret in (wrong, BIND_PASSWORD, BIND_DN):
        assert secret not in caplog.text
        assert secret not in message


def test_a_bind_dn_without_a_password_is_unavailable(directory, caplog):
    """Never an unauthenticated bind that the server might take for anonymous."""
    message, _ = unavailable({**directory.config, "LDAP_BIND_PASSWORD": None})
    assert message == UNAVAILABLE
    assert BIND_DN not in caplog.text


def test_a_lookup_that_goes_wrong_never_logs_the_password(directory, caplog):
    directory.pause()
    unavailable({**directory.config, "LDAP_TIMEOUT_SECONDS": 0.5})
    directory.resume()
    directory.stop()
    unavailable(directory.start_tls_config)
    assert caplog.text
    assert BIND_PASSWORD not in caplog.text


# --- TLS -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ldaps", "start_tls"])
def test_tls_with_the_directory_ca(directory, kind):
    config = directory.ldaps_config if kind == "ldaps" else directory.start_tls_config
    assert find_mail("jsmith", config=config) == "j.smith@example.com"


def test_ldaps_by_a_host_name_the_certificate_holds(directory):
    config = {**directory.ldaps_config, "LDAP_URL": f"ldaps://localhost:{directory.ldaps_port}"}
    assert find_mail("jsmith", config=config) == "j.smith@example.com"


@pytest.mark.parametrize("kind", ["ldaps", "start_tls"])
@pytest.mark.parametrize("ca", ["none: the system's trust store", "another CA"])
def test_a_certificate_the_portal_cannot_trust_is_unavailable(directory, caplog, kind, ca):
    config = directory.ldaps_config if kind == "ldaps" else directory.start_tls_config
    ca_file = None if ca.startswith("none") else directory.other_ca_file
    message, _ = unavailable({**config, "LDAP_CA_FILE": ca_file})
    assert message == UNAVAILABLE
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


def test_a_certificate_for_another_host_is_unavailable(directory, caplog):
    """The same slapd and certificate, reached at 127.0.0.2, a name the certificate
    doesn't hold."""
    config = {**directory.ldaps_config, "LDAP_URL": f"ldaps://127.0.0.2:{directory.ldaps_port}"}
    message, _ = unavailable(config)
    assert message == UNAVAILABLE
    assert "IP address mismatch" in caplog.text
