"""A real SMTP server on loopback (aiosmtpd) for the tests that deliver mail."""
from __future__ import annotations

import socket
import threading
from email import message_from_bytes, policy

from aiosmtpd.controller import Controller


class RecordingHandler:
    """Accepts mail and records it, or answers 451 / 550 when told to."""

    def __init__(self) -> None:
        self.mode = "accept"  # "accept" | "451" (temporary) | "550" (permanent)
        self.messages: list[tuple[list[str], object]] = []
        self.peers: list[tuple] = []  # the client end of the connection of each message
        self.rcpt_attempts = 0
        self._lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self._lock:
            self.rcpt_attempts += 1
        if self.mode == "550":
            return "550 5.1.1 Mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.mode == "451":
            return "451 4.3.0 Mailbox busy, try again later"
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        with self._lock:
            self.messages.append((list(envelope.rcpt_tos), parsed))
            self.peers.append(session.peer)
        return "250 Message accepted for delivery"

    def received_by(self, address: str) -> list:
        return [m for rcpt, m in self.messages if address in rcpt]


class _CountingController(Controller):
    """aiosmtpd builds one SMTP protocol per accepted connection: counted here."""

    def __init__(self, server: SmtpServer, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._server = server

    def factory(self):
        with self._server.lock:
            self._server.connections += 1
        return super().factory()


class SmtpServer:
    """An aiosmtpd controller on a fixed free port that can go down and come back.
    `connections` counts the TCP connections it has accepted (start() makes one of its
    own, to see the server is up)."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.handler = RecordingHandler()
        self.controller: Controller | None = None
        self.connections = 0
        self.lock = threading.Lock()

    def start(self) -> None:
        # A fresh controller each time: a stopped one has closed its event loop.
        # server_hostname spares aiosmtpd a slow getfqdn() look-up.
        self.controller = _CountingController(self, self.handler, hostname="127.0.0.1",
                                              port=self.port, server_hostname="smtp.test",
                                              ready_timeout=5)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


