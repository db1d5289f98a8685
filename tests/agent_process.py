"""`portal-agent` as a real process against the test app served on 127.0.0.1 — what the
agent tests share: the `portal_url` fixture (import it into the test module) and where
the installed console script is."""
from __future__ import annotations

import os
import shutil
import sys
import threading
from pathlib import Path

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
