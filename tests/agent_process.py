"""`portal-agent` as a real process against the test app served on 127.0.0.1 — what the
agent tests share: the `portal_url` fixture (import it into the test module), where the
installed console script is, and a pseudo-terminal to run it on."""
from __future__ import annotations

import fcntl
import os
import pty
import shutil
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from select import select

import pytest
from werkzeug.serving import make_server

AGENT_TIMEOUT = 30  # seconds: no agent run may hang the suite


def agent_path() -> str:
    found = shutil.which("portal-agent", path=str(Path(sys.executable).parent)) \
        or shutil.which("portal-agent")
    assert found, "the portal-agent console script is not installed (pip install -e .)"
    return found


def agent_env(**extra: str) -> dict[str, str]:
    """The test's environment without PORTAL_AGENT_* (which would change the agent's
    defaults), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_AGENT_")}
    return env | extra


class ServedApp:
    """The app behind a real threaded HTTP server on loopback; it can go down and come
    back on the same port (a portal that is away for a while)."""

    def __init__(self, app) -> None:
        self.app = app
        self.port = 0
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server = make_server("127.0.0.1", self.port, self.app, threaded=True)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=5)
        self.server.server_close()


@pytest.fixture
def portal_url(app):
    """The test app served by a real threaded HTTP server, as the agent sees a portal."""
    served = ServedApp(app)
    yield served.url
    served.stop()


class Terminal:
    """The agent on a pseudo-terminal of its own (its controlling terminal, as at a
    login screen): what it shows, and what is typed after a prompt."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(
            command, stdin=slave, stdout=slave, stderr=slave, env=env,
            start_new_session=True,  # then the terminal becomes its controlling one
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        self.shown = ""

    def read_until(self, text: str | None) -> str:
        """Output up to `text` (None: until the agent ends)."""
        give_up = time.monotonic() + AGENT_TIMEOUT
        while text is None or text not in self.shown:
            assert time.monotonic() < give_up, f"never shown: {text!r} in {self.shown!r}"
            if not select([self.master], [], [], 0.1)[0]:
                continue
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: the agent closed the terminal
                chunk = b""
            if not chunk:
                break
            self.shown += chunk.decode(errors="replace")
        return self.shown

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def finish(self) -> tuple[int, str]:
        self.read_until(None)
        code = self.process.wait(timeout=AGENT_TIMEOUT)
        os.close(self.master)
        return code, self.shown
