"""Who may open which page and do what, in department A (security.md 25–27).

Every role is tried against every page and action of A, by id. A forbidden POST must also
leave every table exactly as it was; an allowed one must change something.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
from factories import NOW

from portal.extensions import db
from portal.models import Department
from portal.services import agents, departments, requests
from portal.services.actors import CLI

from .helpers import HTMX, location, settings_form, snapshot, split_url

ADMIN = "admin@example.com"
A_ADMIN = "a-admin@example.com"
B_ADMIN = "b-admin@example.com"
APPROVER = "approver@example.com"
AUDITOR = "auditor@example.com"
TECHNICIAN = "technician@example.com"
ANONYMOUS = None


@dataclass(frozen=True)
class Action:
    name: str
    method: str
    path: str  # formatted with the ids of `world`
    data: dict | None = None
    htmx: bool = False
    admin_only: bool = False  # global admins only
    approver_ok: bool = False  # approvers of A may too (the Sessions page, End session)
    edit_page: bool = False   # a GET that only serves a change form
    ok: int = 200
    shows: str | None = None  # text an allowed GET shows


ACTIONS = [
    Action("settings page", "GET", "/departments/{a}/settings", shows="A-DEV-1"),
    Action("exclusions", "GET", "/departments/{a}/exclusions", shows="A-DEV-1"),
    Action("exclusions fragment", "GET", "/departments/{a}/exclusions", htmx=True,
           shows="A-DEV-1"),
    Action("save settings", "POST", "/departments/{a}/settings",
           settings_form(confirmation_timeout_seconds=90), ok=303),
    Action("save settings htmx", "POST", "/departments/{a}/settings",
           settings_form(confirmation_timeout_seconds=90), htmx=True),
    Action("add exclusion", "POST", "/departments/{a}/exclusions",
           {"target": "device:{dev2}"}, ok=303),
    Action("add exclusion htmx", "POST", "/departments/{a}/exclusions",
           {"target": "device:{dev2}"}, htmx=True),
    Action("remove exclusion", "POST", "/departments/{a}/exclusions/{eid}/delete", ok=303),
    Action("remove exclusion htmx", "POST", "/departments/{a}/exclusions/{eid}/delete",
           htmx=True),
    Action("devices", "GET", "/departments/{a}/devices", shows="A-DEV-2"),
    Action("create device", "POST", "/departments/{a}/devices",
           {"name": "NEW-DEV", "os": "Linux", "ip_address": "10.1.1.1", "group_id": ""},
           ok=201),
    Action("device edit page", "GET", "/departments/{a}/devices/{dev}/edit", edit_page=True,
           shows="A-DEV-1"),
    Action("edit device", "POST", "/departments/{a}/devices/{dev}/edit",
           {"name": "A-DEV-1-RENAMED", "os": "Windows 11", "ip_address": "10.0.0.5",
            "group_id": ""}, ok=303),
    Action("delete device", "POST", "/departments/{a}/devices/{dev}/delete",
           {"confirm": "y"}, ok=303),
    Action("groups", "GET", "/departments/{a}/groups", shows="Testers"),
    Action("create group", "POST", "/departments/{a}/groups", {"name": "Night shift"},
           ok=303),
    Action("group edit page", "GET", "/departments/{a}/groups/{gid}/edit", edit_page=True,
           shows="Testers"),
    Action("rename group", "POST", "/departments/{a}/groups/{gid}/edit", {"name": "Testers 2"},
           ok=303),
    Action("delete group", "POST", "/departments/{a}/groups/{gid}/delete", {"confirm": "y"},
           ok=303),
    Action("members", "GET", "/departments/{a}/members", shows="spare@example.com"),
    Action("add member", "POST", "/departments/{a}/members",
           {"email": "newbie@example.com", "role": "approver", "password": "long enough pw"},
           ok=303),
    Action("remove member", "POST", "/departments/{a}/members/{mid}/delete", ok=303),
    Action("remove member htmx", "POST", "/departments/{a}/members/{mid}/delete", htmx=True,
           ok=204),
    Action("audit log", "GET", "/departments/{a}/audit", shows="A-DEV-1"),
    Action("audit log export CSV", "GET", "/departments/{a}/audit/export.csv",
           shows="A-DEV-1"),
    Action("audit log export JSON Lines", "GET", "/departments/{a}/audit/export.jsonl",
           shows="A-DEV-1"),
    Action("create department", "POST", "/departments", {"name": "Gamma"}, admin_only=True,
           ok=303),
    Action("department edit page", "GET", "/departments/{a}/edit", admin_only=True,
           shows="Alpha"),
    Action("rename department", "POST", "/departments/{a}/edit", {"name": "Alpha 2"},
           admin_only=True, ok=303),
    # Last: an allowed End session flashes its message onto the next page shown.
    Action("sessions page", "GET", "/departments/{a}/sessions", approver_ok=True,
           shows="A-DEV-1"),
    Action("end session page", "GET", "/departments/{a}/sessions/{rsid}/end",
           approver_ok=True, edit_page=True, shows="A-DEV-1"),
    Action("end session", "POST", "/departments/{a}/sessions/{rsid}/end",
           {"reason": "not expected"}, approver_ok=True, ok=303),
]


def expected(user: str | None, action: Action) -> str:
    """'ok', 'forbidden' or 'sign-in'."""
    if user is ANONYMOUS:
        return "sign-in"
    if user == ADMIN:
        return "ok"
    if action.admin_only:
        return "forbidden"
    if user == A_ADMIN:
        return "ok"
    if user == APPROVER and action.approver_ok:
        return "ok"
    if user == AUDITOR:
        # Read-only: the lists and the settings, not the pages that only serve change forms.
        return "ok" if action.method == "GET" and not action.edit_page else "forbidden"
    return "forbidden"  # B's admin, approver and technician of A


@pytest.fixture
def world(make):
    a = make.department("Alpha")
    b = make.department("Beta")
    group = make.group(a, "Testers")
    dev = make.device(a, "A-DEV-1", group=group)
    dev2 = make.device(a, "A-DEV-2", ip="10.0.0.6")
    make.device(b, "B-DEV-1")
    exclusion = departments.add_exclusion(department=a, target=f"device:{dev.id}", actor=CLI,
                                          now=NOW)
    db.session.commit()
    spare = make.user("spare@example.com", "approver", a)
    # A running remote session on A-DEV-1 (excluded: approved at once), for End session.
    runner = make.user("runner@example.com", "technician", a)
    req = requests.create_session_request(technician=runner, device_name="A-DEV-1",
                                          actor=CLI, now=NOW, base_url="http://portal.test")
    session = agents.start_remote_session(device=dev, request_id=req.id, actor=CLI, now=NOW)
    db.session.commit()
    return {"a": a.id, "b": b.id, "dev": dev.id, "dev2": dev2.id, "gid": group.id,
            "eid": exclusion.id, "mid": spare.memberships[0].id, "rsid": session.id}


ROLES = {  # user -> (role, department key in `world`)
    ADMIN: ("admin", None),
    A_ADMIN: ("department_admin", "a"),
    B_ADMIN: ("department_admin", "b"),
    APPROVER: ("approver", "a"),
    AUDITOR: ("auditor", "a"),
    TECHNICIAN: ("technician", "a"),
}


@pytest.fixture
def sign_in(make, auth, world):
    def sign_in(user):
        role, key = ROLES[user]
        department = db.session.get(Department, world[key]) if key else None
        make.user(user, role, department)
        assert auth.login(user).status_code == 303

    return sign_in


def _send(client, action: Action, ids: dict, headers=None):
    path = action.path.format(**ids)
    data = {k: v.format(**ids) for k, v in (action.data or {}).items()}
    headers = {**(HTMX if action.htmx else {}), **(headers or {})}
    return path, client.open(path, method=action.method, data=data if action.method == "POST"
                             else None, headers=headers)


def check(client, world, user, action) -> None:
    before = snapshot()
    path, response = _send(client, action, world)
    after = snapshot()
    outcome = expected(user, action)
    body = response.get_data(as_text=True)

    if outcome == "ok":
        assert response.status_code == action.ok, body[:500]
        if action.method == "POST":
            assert after != before, "an allowed change changed nothing"
        else:
            assert action.shows in body
        if action.htmx:
            assert "<html" not in body
        return

    assert after == before, "a refused request changed the database"
    assert "A-DEV-1" not in body and "spare@example.com" not in body
    if outcome == "forbidden":
        assert response.status_code == 403
        if not action.htmx:
            assert "Not allowed" in body
        return

    # anonymous: sent to sign in, and back to a page after it
    if action.htmx:
        assert response.status_code == 401
        assert "Location" not in response.headers  # never a redirect to an htmx request
        target, query = split_url(response.headers["HX-Redirect"])
    else:
        assert response.status_code == (302 if action.method == "GET" else 303)
        target, query = location(response)
    assert target == "/login"
    assert query["next"] == ([path] if action.method == "GET" and not action.htmx else ["/"])


@pytest.mark.parametrize("action", ACTIONS, ids=[a.name for a in ACTIONS])
@pytest.mark.parametrize("user", [ADMIN, A_ADMIN], ids=["admin", "a-admin"])
def test_admins(client, sign_in, world, user, action):
    """Each action on a fresh department: the allowed ones change it."""
    sign_in(user)
    check(client, world, user, action)


@pytest.mark.parametrize("user", [B_ADMIN, APPROVER, AUDITOR, TECHNICIAN, ANONYMOUS],
                         ids=["b-admin", "approver", "auditor", "technician", "anonymous"])
def test_everyone_else(client, sign_in, world, subtests, user):
    """Every action in turn: each refused one is checked to leave every table as it was."""
    if user is not ANONYMOUS:
        sign_in(user)
    for action in ACTIONS:
        with subtests.test(action.name):
            check(client, world, user, action)


# --- where "next" points when the sign-in is lost on a form or an htmx request ---------


def test_lost_sign_in_on_htmx_request_returns_to_the_page_not_the_fragment(client, world):
    page = f"http://localhost/departments/{world['a']}/settings"
    response = client.get(f"/departments/{world['a']}/exclusions",
                          headers={**HTMX, "HX-Current-URL": page})
    assert response.status_code == 401
    target, query = split_url(response.headers["HX-Redirect"])
    assert (target, query["next"]) == ("/login", [f"/departments/{world['a']}/settings"])


def test_lost_sign_in_on_a_form_post_returns_to_the_page_of_the_form(client, world):
    page = f"http://localhost/departments/{world['a']}/settings"
    response = client.post(f"/departments/{world['a']}/exclusions/{world['eid']}/delete",
                           headers={"Referer": page})
    assert response.status_code == 303
    assert location(response) == ("/login", {"next": [f"/departments/{world['a']}/settings"]})


def test_a_foreign_referer_is_not_used_as_next(client, world):
    response = client.post(f"/departments/{world['a']}/settings",
                           headers={"Referer": "https://evil.example/departments/1/settings"})
    assert location(response) == ("/login", {"next": ["/"]})


# --- departments that don't exist, and department B by id ----------------------------


@pytest.mark.parametrize("path", ["/departments/{b}/settings", "/departments/{b}/exclusions",
                                  "/departments/{b}/sessions",
                                  "/departments/{b}/devices", "/departments/{b}/groups",
                                  "/departments/{b}/members", "/departments/{b}/audit",
                                  "/departments/{b}/audit/export.csv",
                                  "/departments/{b}/audit/export.jsonl"])
def test_department_admin_of_a_gets_403_for_b(client, sign_in, world, path):
    sign_in(A_ADMIN)
    response = client.get(path.format(**world))
    assert response.status_code == 403
    assert "B-DEV-1" not in response.get_data(as_text=True)


def test_unknown_department_is_403_for_non_admins_and_404_for_admins(client, auth, sign_in):
    sign_in(A_ADMIN)
    assert client.get("/departments/9999/settings").status_code == 403
    auth.logout()
    sign_in(ADMIN)
    assert client.get("/departments/9999/settings").status_code == 404
