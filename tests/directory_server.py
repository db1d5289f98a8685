"""A real OpenLDAP slapd for the tests (Debian's `slapd` package; `.ci/run` installs it):
its own slapd.conf, mdb database and users in a temporary folder, on loopback ports
picked at start-up — never the system's slapd or port 389.

Tests use the `directory` fixture (tests/conftest.py), a running `Slapd`:

    directory.config            PORTAL_* keys (without the prefix) for plain LDAP:
                                LDAP_URL, LDAP_BIND_DN, LDAP_BIND_PASSWORD, LDAP_BASE_DN,
                                LDAP_USER_FILTER, LDAP_MAIL_ATTRIBUTE, LDAP_START_TLS,
                                LDAP_CA_FILE, LDAP_TIMEOUT_SECONDS — e.g.
                                create_app({**TEST_CONFIG, **directory.config})
    directory.ldaps_config      the same over ldaps://, checked against the test CA
    directory.start_tls_config  the same over ldap:// with StartTLS
    directory.stop() / start()  the directory down and back (same ports, same data)
    directory.pause() / resume()  SIGSTOP / SIGCONT: connections are accepted, nothing
                                answers

The `directory` fixture hands every test a running, answering slapd, whatever the test
before did to it. The users (USERS below) follow Active Directory's shape closely
enough for the portal's default filter: a `user` class with `sAMAccountName` (schema
below), and `uid` with the same value for `(uid={username})`."""
from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SLAPD = Path("/usr/sbin/slapd")
SLAPADD = Path("/usr/sbin/slapadd")
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")

BASE_DN = "dc=example,dc=test"
BIND_DN = f"cn=portal,ou=services,{BASE_DN}"
BIND_PASSWORD = "bind-secret-Qx7vT2"  # the tests look for it in logs and messages
ADMIN_DN = f"cn=admin,{BASE_DN}"
ADMIN_PASSWORD = "admin-secret-Kp4wZ9"
USER_FILTER = "(sAMAccountName={username})"  # the portal's default
LOOPBACK = "127.0.0.1"
OTHER_LOOPBACK = "127.0.0.2"  # also serves ldaps, under a name the certificate doesn't hold


@dataclass(frozen=True)
class User:
    dn: str
    account: str  # sAMAccountName and uid
    mail: str | None


USERS = [
    User(f"cn=John Smith,ou=people,{BASE_DN}", "jsmith", "j.smith@example.com"),
    User(f"cn=Nora Mailless,ou=people,{BASE_DN}", "nomail", None),
    User(f"cn=Bad Mail,ou=people,{BASE_DN}", "badmail", "not an address"),
    # Two entries for one name: ambiguous, so "not in the directory".
    User(f"cn=Tom Twin,ou=people,{BASE_DN}", "twin", "tom.twin@example.com"),
    User(f"cn=Tim Twin,ou=contractors,{BASE_DN}", "twin", "tim.twin@example.com"),
    # Names made of filter syntax: found only if escaped, as themselves.
    User(f"cn=Odd Name,ou=people,{BASE_DN}", "o*dd(name)\\x", "odd@example.com"),
    User(f"cn=Star,ou=people,{BASE_DN}", "*", "star@example.com"),
    User(f"cn=Juergen Mueller,ou=people,{BASE_DN}", "jürgen", "juergen@example.com"),
]

# Active Directory's OIDs for the attribute and the class (an auxiliary class here, so
# that the entries can be inetOrgPersons).
AD_SCHEMA = """\
attributetype ( 1.2.840.113556.1.4.221 NAME 'sAMAccountName'
    EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.2.840.113556.1.5.9 NAME 'user' SUP top AUXILIARY MAY ( sAMAccountName ) )
"""

SLAPD_CONF = """\
include {schema}/core.schema
include {schema}/cosine.schema
include {schema}/inetorgperson.schema
include {dir}/ad.schema
modulepath {modules}
moduleload back_mdb
pidfile {dir}/slapd.pid
argsfile {dir}/slapd.args
TLSCACertificateFile {dir}/ca.pem
TLSCertificateFile {dir}/server.pem
TLSCertificateKeyFile {dir}/server.key

database mdb
maxsize 16777216
suffix "{base}"
rootdn "{admin}"
rootpw {admin_password}
directory {dir}/data
index objectClass,uid,sAMAccountName eq
access to attrs=userPassword by anonymous auth by * none
access to * by * read
"""


def _ldif_value(name: str, value: str) -> str:
    safe = value.isascii() and value.isprintable() and value[:1] not in (" ", ":", "<")
    if safe and not value.endswith(" "):
        return f"{name}: {value}"
    return f"{name}:: {base64.b64encode(value.encode()).decode()}"


def _entry(dn: str, **attributes: str | list[str]) -> str:
    lines = [_ldif_value("dn", dn)]
    for name, values in attributes.items():
        for value in values if isinstance(values, list) else [values]:
            lines.append(_ldif_value(name, value))
    return "\n".join(lines) + "\n"


def users_ldif() -> str:
    entries = [
        _entry(BASE_DN, objectClass=["dcObject", "organization"], dc="example", o="Example"),
        _entry(f"ou=people,{BASE_DN}", objectClass="organizationalUnit", ou="people"),
        _entry(f"ou=contractors,{BASE_DN}", objectClass="organizationalUnit", ou="contractors"),
        _entry(f"ou=services,{BASE_DN}", objectClass="organizationalUnit", ou="services"),
        _entry(BIND_DN, objectClass=["organizationalRole", "simpleSecurityObject"],
               cn="portal", userPassword=BIND_PASSWORD),
    ]
    for user in USERS:
        cn = user.dn.split(",", 1)[0].removeprefix("cn=")
        attributes = {"objectClass": ["inetOrgPerson", "user"], "cn": cn,
                      "sn": cn.split()[-1], "uid": user.account, "sAMAccountName": user.account}
        if user.mail:
            attributes["mail"] = user.mail
        entries.append(_entry(user.dn, **attributes))
    return "\n".join(entries)


# --- certificates --------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject, issuer, public_key, signing_key, *, is_ca, extensions=()):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                              critical=False))
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signing_key, hashes.SHA256())


def _key_usage(*, is_ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False,
                         key_encipherment=False, data_encipherment=False,
                         key_agreement=False, key_cert_sign=is_ca, crl_sign=is_ca,
                         encipher_only=False, decipher_only=False)


def _write_ca(path: Path, common_name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(_name(common_name), _name(common_name), key.public_key(), key,
                        is_ca=True, extensions=[(_key_usage(is_ca=True), True)])
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def write_tls_files(folder: Path) -> None:
    """ca.pem (the test CA), server.pem + server.key (for localhost and 127.0.0.1,
    signed by it) and other-ca.pem (a CA that signed nothing here)."""
    ca_cert, ca_key = _write_ca(folder / "ca.pem", "Session Gate test CA")
    _write_ca(folder / "other-ca.pem", "Some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    names = x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                         x509.IPAddress(ipaddress.ip_address(LOOPBACK))])
    cert = _certificate(_name("localhost"), ca_cert.subject, key.public_key(), ca_key,
                        is_ca=False, extensions=[
                            (names, False),
                            (_key_usage(is_ca=False), True),
                            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
                            (x509.AuthorityKeyIdentifier.from_issuer_public_key(
                                ca_key.public_key()), False),
                        ])
    (folder / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (folder / "server.key").chmod(0o600)


# --- the server ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


class Slapd:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.ldaps_port = free_port()
        self.process: subprocess.Popen | None = None
        self.is_paused = False
        (folder / "data").mkdir()
        (folder / "ad.schema").write_text(AD_SCHEMA)
        write_tls_files(folder)
        self.conf = folder / "slapd.conf"
        self.conf.write_text(SLAPD_CONF.format(
            schema=SCHEMA_DIR, modules=MODULE_DIR, dir=folder, base=BASE_DN,
            admin=ADMIN_DN, admin_password=ADMIN_PASSWORD))
        (folder / "users.ldif").write_text(users_ldif(), encoding="utf-8")
        subprocess.run([str(SLAPADD), "-q", "-f", str(self.conf), "-l",
                        str(folder / "users.ldif")], check=True, capture_output=True, timeout=60)

    @property
    def url(self) -> str:
        return f"ldap://{LOOPBACK}:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://{LOOPBACK}:{self.ldaps_port}"

    @property
    def config(self) -> dict:
        return {
            "LDAP_URL": self.url,
            "LDAP_BIND_DN": BIND_DN,
            "LDAP_BIND_PASSWORD": BIND_PASSWORD,
            "LDAP_BASE_DN": BASE_DN,
            "LDAP_USER_FILTER": USER_FILTER,
            "LDAP_MAIL_ATTRIBUTE": "mail",
            "LDAP_START_TLS": False,
            "LDAP_CA_FILE": None,
            "LDAP_TIMEOUT_SECONDS": 5,
        }

    @property
    def ca_file(self) -> str:
        return str(self.folder / "ca.pem")

    @property
    def other_ca_file(self) -> str:
        return str(self.folder / "other-ca.pem")

    @property
    def ldaps_config(self) -> dict:
        return {**self.config, "LDAP_URL": self.ldaps_url, "LDAP_CA_FILE": self.ca_file}

    @property
    def start_tls_config(self) -> dict:
        return {**self.config, "LDAP_START_TLS": True, "LDAP_CA_FILE": self.ca_file}

    def start(self) -> None:
        """Running and answering (a no-op when it is)."""
        self.resume()
        if self.process and self.process.poll() is None:
            return
        listen = (f"ldap://{LOOPBACK}:{self.port}/ ldaps://{LOOPBACK}:{self.ldaps_port}/ "
                  f"ldaps://{OTHER_LOOPBACK}:{self.ldaps_port}/")
        log = open(self.folder / "slapd.log", "ab")
        with log:
            # -d: in the foreground, so that this process is slapd itself.
            self.process = subprocess.Popen(
                [str(SLAPD), "-f", str(self.conf), "-h", listen, "-d", "0"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self._wait_until_answering()

    def _wait_until_answering(self, seconds: float = 15) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"slapd exited with {self.process.returncode}: "
                                   f"{(self.folder / 'slapd.log').read_text(errors='replace')}")
            if self._answers():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"slapd did not answer within {seconds} s")

    def _answers(self) -> bool:
        """An anonymous bind gets its reply (a bind request is 14 bytes; the reply
        starts with 0x30, an LDAPMessage SEQUENCE)."""
        bind_request = bytes.fromhex("300c020101600702010304008000")
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=1) as conn:
                conn.sendall(bind_request)
                return conn.recv(1)[:1] == b"\x30"
        except OSError:
            return False

    def stop(self) -> None:
        """Down: connections are refused."""
        if not self.process:
            return
        self.resume()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def pause(self) -> None:
        """Up but silent: the kernel still accepts connections, slapd answers nothing."""
        if self.process and self.process.poll() is None and not self.is_paused:
            os.kill(self.process.pid, signal.SIGSTOP)
            self.is_paused = True
            self._wait_until_stopped()

    def _wait_until_stopped(self, seconds: float = 5.0) -> None:
        """A signal lands when its process is next scheduled: on a busy machine slapd
        could still answer a request sent right after the kill. Wait until every thread
        of it reads as stopped ("T") in /proc."""
        tasks = Path(f"/proc/{self.process.pid}/task")
        give_up = time.monotonic() + seconds
        while time.monotonic() < give_up:
            states = []
            for task in tasks.iterdir():
                try:
                    states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
                except (FileNotFoundError, IndexError):
                    continue
            if states and all(state in ("T", "t") for state in states):
                return
            time.sleep(0.005)
        raise RuntimeError("slapd did not stop on SIGSTOP")

    def resume(self) -> None:
        if self.process and self.is_paused:
            os.kill(self.process.pid, signal.SIGCONT)
        self.is_paused = False


def is_installed() -> bool:
    return os.access(SLAPD, os.X_OK) and os.access(SLAPADD, os.X_OK)
