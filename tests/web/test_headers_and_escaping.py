"""Security headers on every page (security.md 34, 36) and escaped names (35)."""
from __future__ import annotations

import pytest

from portal.extensions import db
from portal.services import departments
from portal.services.actors import CLI

from .helpers import HTMX, page

ADMIN = "qa-admin@example.com"
DEVICE_NAME = '<div hx-get="/x">'
GROUP_NAME = "<script>alert(1)</script>"


@pytest.fixture
def qa(make):
    department = make.department("QA Team")
    make.user(ADMIN, "department_admin", department)
    return department


def csp(response) -> dict[str, list[str]]:
    policy = response.headers["Content-Security-Policy"]
    directives = {}
    for part in policy.split(";"):
        words = part.split()
        if words:
            directives[words[0]] = words[1:]
    return directives


def check_headers(response, *, signed_in: bool) -> None:
    policy = csp(response)
    assert policy["default-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    scripts = policy.get("script-src", policy["default-src"])
    assert "'unsafe-inline'" not in scripts and "'unsafe-eval'" not in scripts
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    if signed_in:
        assert "no-store" in response.headers.get("Cache-Control", "")


def check_no_inline_code(response) -> None:
    """What the CSP would block (and break) must not be on the page at all."""
    doc = page(response)
    for script in doc.find_all("script"):
        assert script.get("src", "").startswith("/static/"), "inline or foreign script"
        assert script.text() == ""
    assert doc.find_all("style") == []
    for node in doc.iter():
        handlers = [a for a in node.attrs if a.startswith("on") or a.startswith("hx-on")]
        assert handlers == [], f"<{node.tag}> has inline handlers {handlers}"
        assert "style" not in node.attrs, f"<{node.tag}> has an inline style"
        for attr in ("href", "src", "action"):
            assert not (node.get(attr) or "").lower().startswith("javascript:")


PAGES = [
    ("login", None, "/login", 200),
    ("home", ADMIN, "/", 200),
    ("departments", ADMIN, "/departments", 200),
    ("settings", ADMIN, "/departments/{id}/settings", 200),
    ("exclusions fragment", ADMIN, "/departments/{id}/exclusions", 200),
    ("devices", ADMIN, "/departments/{id}/devices", 200),
    ("groups", ADMIN, "/departments/{id}/groups", 200),
    ("members", ADMIN, "/departments/{id}/members", 200),
    ("403", ADMIN, "/departments/{id}/edit", 403),
    ("404", ADMIN, "/no/such/page", 404),
    ("404 signed out", None, "/no/such/page", 404),
    ("405", None, "/logout", 405),
]


@pytest.mark.parametrize("who,url,status", [p[1:] for p in PAGES], ids=[p[0] for p in PAGES])
def test_every_page_has_the_security_headers(client, auth, qa, who, url, status):
    if who:
        auth.login(who)
    response = client.get(url.format(id=qa.id))
    assert response.status_code == status
    check_headers(response, signed_in=bool(who))
    check_no_inline_code(response)


def test_htmx_fragments_and_redirects_have_them_too(client, auth, qa):
    anonymous = client.get(f"/departments/{qa.id}/exclusions", headers=HTMX)
    assert anonymous.status_code == 401
    check_headers(anonymous, signed_in=False)
    auth.login(ADMIN)
    fragment = client.get(f"/departments/{qa.id}/exclusions", headers=HTMX)
    check_headers(fragment, signed_in=True)
    assert "HX-Request" in fragment.headers["Vary"]
    redirect = client.post(f"/departments/{qa.id}/groups", data={"name": "Night shift"})
    assert redirect.status_code == 303
    check_headers(redirect, signed_in=True)


def test_hsts_only_over_https(client):
    assert "Strict-Transport-Security" not in client.get("/login").headers
    secure = client.get("/login", base_url="https://localhost")
    assert secure.headers["Strict-Transport-Security"].startswith("max-age=")


def test_pages_cannot_be_framed(client):
    assert client.get("/login").headers["X-Frame-Options"] == "DENY"


# --- names that look like markup -----------------------------------------------------


@pytest.fixture
def hostile(make, qa):
    group = make.group(qa, GROUP_NAME)
    device = make.device(qa, DEVICE_NAME, group=group, os="<b>OS</b>", ip="10.0.0.9")
    return device, group


def check_escaped(response, *names: str) -> None:
    body = response.get_data(as_text=True)
    assert DEVICE_NAME not in body and GROUP_NAME not in body
    doc = page(response)
    assert not [n for n in doc.iter() if n.has("hx-get") and n.get("hx-get") == "/x"]
    assert all(s.has("src") for s in doc.find_all("script"))
    assert doc.find_all("b") == []
    text = doc.text()
    for name in names:
        assert name in text, f"{name!r} is not shown as text"


def test_markup_in_names_is_escaped_on_the_devices_page(client, auth, qa, hostile):
    auth.login(ADMIN)
    response = client.get(f"/departments/{qa.id}/devices")
    check_escaped(response, DEVICE_NAME, GROUP_NAME, "<b>OS</b>")
    cells = [td.text() for td in page(response).one("tbody").find_all("td")][:4]
    assert cells == [DEVICE_NAME, "<b>OS</b>", "10.0.0.9", GROUP_NAME]


@pytest.mark.parametrize("url", ["/departments/{id}/groups", "/departments/{id}/devices/{dev}/edit",
                                 "/departments/{id}/groups/{gid}/edit"])
def test_markup_in_names_is_escaped_on_edit_pages(client, auth, qa, hostile, url):
    device, group = hostile
    auth.login(ADMIN)
    response = client.get(url.format(id=qa.id, dev=device.id, gid=group.id))
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert DEVICE_NAME not in body and GROUP_NAME not in body
    assert all(s.has("src") for s in page(response).find_all("script"))


@pytest.mark.parametrize("htmx", [False, True], ids=["page", "fragment"])
def test_markup_in_names_is_escaped_in_the_exclusions_table(client, auth, qa, hostile, htmx):
    device, group = hostile
    for target in (f"device:{device.id}", f"group:{group.id}"):
        departments.add_exclusion(department=qa, target=target, actor=CLI, now=device.created_at)
    db.session.commit()
    auth.login(ADMIN)
    url = f"/departments/{qa.id}/exclusions" if htmx else f"/departments/{qa.id}/settings"
    response = client.get(url, headers=HTMX if htmx else {})
    check_escaped(response, DEVICE_NAME, GROUP_NAME)
    doc = page(response)
    first_cells = [tr.find("td").text() for tr in doc.one("section", id="exclusions")
                   .one("tbody").find_all("tr")]
    assert first_cells == [DEVICE_NAME, f"{GROUP_NAME} group"]
    confirms = [f.get("hx-confirm") for f in doc.find_all("form") if f.has("hx-confirm")]
    assert any(DEVICE_NAME in c for c in confirms)  # intact as an attribute value


def test_markup_in_a_name_is_escaped_in_flash_messages(client, auth, qa):
    auth.login(ADMIN)
    response = client.post(f"/departments/{qa.id}/groups", data={"name": GROUP_NAME})
    assert response.status_code == 303
    follow = client.get(response.headers["Location"])
    check_escaped(follow, f"Group “{GROUP_NAME}” created.")
