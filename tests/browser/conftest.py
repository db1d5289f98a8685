"""Browser tests: Playwright drives Debian's Chromium against the test app served on
127.0.0.1 (the same database the test reads through `db.session`).

CSRF protection is switched on for these tests, so forms and htmx requests carry real
tokens the way they do in production. Every console message and page error is recorded;
a Content-Security-Policy violation or an uncaught script error fails the test.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from playwright.sync_api import Page, expect

from portal.extensions import db

HERE = Path(__file__).resolve().parent

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def pytest_collection_modifyitems(config, items):
    """Every test in this folder drives a browser: mark it so `-m "not browser"` skips it."""
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    # Playwright's own browser download doesn't work here; use the system Chromium.
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def base_url():
    """Tests build absolute URLs from `live_server` (a new port per test), so contexts get
    no base URL. This also replaces pytest-playwright's fallback `base_url`, an instance-
    method fixture that pytest 9 reports with PytestRemovedIn10Warning (an error here,
    since warnings are errors) when pytest-base-url is not installed."""
    return None


@dataclass
class LiveServer:
    url: str
    port: int

    def __call__(self, path: str = "/") -> str:
        return self.url + path


def _closed_before_sending(app):
    """Each response read whole and closed before Werkzeug's server sends it. When the
    browser drops a connection mid-response (it navigates away while the favicon is on
    its way), that server's clean-up reads the socket, fails, and never closes the
    response: an open static file, whose ResourceWarning failed a test once."""
    def wsgi(environ, start_response):
        iterable = app(environ, start_response)
        try:
            return [b"".join(iterable)]
        finally:
            if hasattr(iterable, "close"):
                iterable.close()
    return wsgi


@pytest.fixture
def live_server(app):
    """Serve the test `app` on a free port of 127.0.0.1 in a daemon thread."""
    app.config["WTF_CSRF_ENABLED"] = True
    server = make_server("127.0.0.1", 0, _closed_before_sending(app), threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield LiveServer(url=f"http://127.0.0.1:{server.server_port}",
                         port=server.server_port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@dataclass
class BrowserLog:
    """What the pages said on the console, and what they threw."""

    messages: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def on_console(self, message) -> None:
        line = f"[{message.type}] {message.text}"
        self.messages.append(line)
        if message.type == "error":
            self.errors.append(message.text)

    def on_page_error(self, error) -> None:
        self.page_errors.append(str(error))

    @property
    def csp_violations(self) -> list[str]:
        return [text for text in self.errors if "Content Security Policy" in text]

    def problems(self) -> list[str]:
        return ([f"CSP violation: {text}" for text in self.csp_violations]
                + [f"uncaught page error: {text}" for text in self.page_errors])


@pytest.fixture
def browser_log() -> BrowserLog:
    return BrowserLog()


@pytest.fixture
def new_context(new_context, browser_log):
    """pytest-playwright's factory, with every context's console and errors recorded."""

    def _new_context(**kwargs):
        context = new_context(**kwargs)
        context.on("console", browser_log.on_console)
        context.on("weberror", lambda web_error: browser_log.on_page_error(web_error.error))
        return context

    return _new_context


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Fail the test itself (not its teardown) when a page broke the CSP or threw."""
    result = yield
    log = item.funcargs.get("browser_log") if hasattr(item, "funcargs") else None
    if log is not None and log.problems():
        pytest.fail("The browser reported:\n" + "\n".join(log.problems()), pytrace=False)
    return result


@pytest.fixture
def fresh():
    """Forget what the test's session has loaded, so the next query reads what the
    server committed (SQLite and PostgreSQL alike)."""

    def _fresh():
        db.session.commit()
        db.session.expire_all()
        return db.session

    return _fresh


# --- data and user actions shared by the tests ---------------------------------------

ADMIN_EMAIL = "qa-admin@example.com"
ADMIN_PASSWORD = "browser tests only"
DEVICE = "WIN-0859G9I39J0"
NO_RELOAD_MARKER = "set before the change; a full page load would wipe it"


@dataclass
class QA:
    department: object
    admin_email: str
    password: str
    device: str

    @property
    def settings_path(self) -> str:
        return f"/departments/{self.department.id}/settings"


@pytest.fixture
def qa(make) -> QA:
    """"QA Team" with a group, two devices and a department admin."""
    department = make.department("QA Team")
    group = make.group(department, "Testers")
    make.device(department, DEVICE, group=group, os="Windows 11 Pro", ip="10.20.0.21")
    make.device(department, "ubuntu-qa-03", os="Ubuntu 24.04", ip="10.20.0.23")
    make.user(ADMIN_EMAIL, "department_admin", department, password=ADMIN_PASSWORD)
    return QA(department=department, admin_email=ADMIN_EMAIL, password=ADMIN_PASSWORD,
              device=DEVICE)


@pytest.fixture
def sign_in(live_server):
    """Sign in through the /login form, the way a person does."""

    def _sign_in(page: Page, email: str, password: str) -> None:
        page.goto(live_server("/login"))
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator(".topbar .who")).to_have_text(email)

    return _sign_in


def mark_window(page: Page) -> None:
    """Leave a marker on `window` that only survives if the page is not reloaded."""
    page.evaluate("marker => { window.__noReloadMarker = marker; }", NO_RELOAD_MARKER)


def window_marker(page: Page):
    return page.evaluate("() => window.__noReloadMarker ?? null")


@pytest.fixture
def no_reload():
    """no_reload.mark(page) before an htmx change; no_reload.check(page) after it."""

    class _NoReload:
        mark = staticmethod(mark_window)

        @staticmethod
        def check(page: Page) -> None:
            assert window_marker(page) == NO_RELOAD_MARKER, (
                "the page was reloaded: htmx should have swapped a fragment in place")

    return _NoReload()
