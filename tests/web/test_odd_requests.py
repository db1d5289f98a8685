"""Odd page keys and odd encodings (design.md "Never a 500 for bad input"): a page key that
is huge, negative or no number shows the first page; bytes that decode to no character
never reach a form."""
from __future__ import annotations

import pytest
from factories import NOW

from portal.extensions import db
from portal.services import departments
from portal.services import requests as request_service
from portal.services.actors import CLI

from .helpers import page, settings_form, snapshot

ROOT = "root@example.com"
TECH = "tech@example.com"
ODD_NUMBERS = ["99999999999999999999", str(2**31), str(2**63), "-5", "-0", "0", "abc", "",
               "1e3", "1.5", " 7", "٣", "²", "0x10", "%00", "9" * 5000]


@pytest.fixture
def qa(make):
    qa = make.department("QA Team")
    make.user(ROOT, "admin")
    make.user(TECH, "technician", qa)
    for n in range(4):
        make.device(qa, f"PC-{n}")
    values = {**departments.settings_values(qa.settings), "email_recipients":
              "a@example.com, b@example.com", "is_email_authorization_required": True}
    departments.update_settings(department=qa, values=values, actor=CLI, now=NOW)
    for n in range(3):  # mail in the outbox
        request_service.create_session_request(
            technician=make.user(TECH, "technician", qa), device_name=f"PC-{n}", actor=CLI,
            now=NOW, base_url="http://portal.test")
    db.session.commit()
    return qa


@pytest.fixture
def small_pages(app):
    app.config["PAGE_SIZE"] = 2  # so there are older pages to key into


def main_text(response) -> str:
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return page(response).one("main").text()


@pytest.mark.parametrize("url", ["/departments/{id}/audit", "/outbox",
                                 "/departments/{id}/audit?request=1"])
def test_an_odd_before_key_shows_the_first_page(client, auth, qa, small_pages, subtests, url):
    auth.login(ROOT)
    url = url.format(id=qa.id)
    first = main_text(client.get(url))
    assert "Older »" in first or "request=" in url
    joiner = "&" if "?" in url else "?"
    for key in ODD_NUMBERS:
        with subtests.test(before=key[:24]):
            assert main_text(client.get(f"{url}{joiner}before={key}")) == first


def test_an_odd_request_filter_shows_the_whole_log(client, auth, qa, subtests):
    auth.login(ROOT)
    url = f"/departments/{qa.id}/audit"
    whole = main_text(client.get(url))
    for key in ODD_NUMBERS:
        with subtests.test(request=key[:24]):
            assert main_text(client.get(f"{url}?request={key}")) == whole


@pytest.mark.parametrize("url", ["/departments/{id}/devices", "/departments/{id}/members"])
def test_odd_after_keys_answer_a_page(client, auth, qa, small_pages, subtests, url):
    auth.login(ROOT)
    url = url.format(id=qa.id)
    first = main_text(client.get(url))
    for query in ["after=", "after=%00", "after=%ED%A0%80", "after=%FF%FE", "after=a&after=b",
                  "after=" + "z" * 5000, "after=%E2%80%AE", "after[]=x", "after=%0A"]:
        with subtests.test(query=query[:24]):
            response = client.get(f"{url}?{query}")
            assert response.status_code == 200
            if query in ("after=", "after=%00", "after[]=x", "after=%0A"):
                assert main_text(response) == first


# --- bytes that are no character ------------------------------------------------------
# werkzeug 3 never hands a form a lone surrogate: a percent-encoded one (%ED%A0%80 is
# U+D800 in UTF-8's pattern) stays as the literal text "%ED%A0%80", raw bytes that are no
# UTF-8 empty an urlencoded form, and multipart decodes with U+FFFD (and only from
# ascii/utf-8/latin-1, never UTF-7, which could spell a surrogate). These tests keep it so.

SURROGATE_BYTES = ["%ED%A0%80", "a%ED%BF%BFb", "%ED%B0%80%ED%A0%80"]
FORMS = [  # (who, url, the other fields, the field under test)
    (None, "/login", {"email": ROOT, "password": "x" * 12}, "email"),
    (None, "/login", {"email": ROOT, "password": "x" * 12}, "password"),
    (ROOT, "/departments", {}, "name"),
    (ROOT, "/departments/{id}/edit", {}, "name"),
    (ROOT, "/departments/{id}/settings", settings_form(), "confirmation_message"),
    (ROOT, "/departments/{id}/settings", settings_form(), "email_recipients"),
    (ROOT, "/departments/{id}/settings", settings_form(), "confirmation_timeout_seconds"),
    (ROOT, "/departments/{id}/devices", {"os": "", "ip_address": "", "group_id": ""},
     "name"),
    (ROOT, "/departments/{id}/devices", {"name": "NEW-PC", "ip_address": "", "group_id": ""},
     "os"),
    (ROOT, "/departments/{id}/devices", {"name": "NEW-PC", "os": "", "group_id": ""},
     "ip_address"),
    (ROOT, "/departments/{id}/groups", {}, "name"),
    (ROOT, "/departments/{id}/members", {"role": "approver", "password": "long enough pw"},
     "email"),
    (ROOT, "/departments/{id}/members", {"role": "approver", "email": "new@example.com"},
     "password"),
    (ROOT, "/departments/{id}/exclusions", {}, "target"),
    (TECH, "/connect", {"device": "PC-3"}, "run_as"),
    (TECH, "/connect", {"device": "PC-3"}, "reason"),
    (TECH, "/connect", {}, "device"),
]


def urlencode_raw(fields: dict[str, str]) -> str:
    from urllib.parse import quote

    return "&".join(f"{quote(k)}={quote(v)}" for k, v in fields.items())


def no_surrogate_stored() -> None:
    assert "\\ud" not in repr(snapshot()).lower()


@pytest.mark.parametrize("who,url,others,field", FORMS,
                         ids=[f"{u.rsplit('/', 1)[-1]}-{f}" for _, u, _, f in FORMS])
def test_percent_encoded_surrogates_never_reach_a_form(client, auth, qa, subtests, who, url,
                                                       others, field):
    if who:
        auth.login(who)
    for raw in SURROGATE_BYTES:
        with subtests.test(value=raw):
            body = urlencode_raw(others) + ("&" if others else "") + f"{field}={raw}"
            response = client.post(url.format(id=qa.id), data=body,
                                   content_type="application/x-www-form-urlencoded")
            assert response.status_code < 500, response.get_data(as_text=True)[:500]
            no_surrogate_stored()


def test_raw_bytes_that_are_no_utf8_empty_the_form(client, auth, qa):
    auth.login(ROOT)
    before = snapshot()
    response = client.post("/departments", data=b"name=\xed\xa0\x80",
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 422
    assert snapshot() == before


@pytest.mark.parametrize("charset", ["utf-8", "utf-7", "utf-16"])
def test_multipart_fields_never_decode_to_a_surrogate(client, auth, qa, charset):
    auth.login(ROOT)
    part = {"utf-8": b"\xed\xa0\x80", "utf-7": b"+2AA-", "utf-16": b"\x00\xd8"}[charset]
    body = (b"--B\r\nContent-Disposition: form-data; name=\"name\"\r\n"
            b"Content-Type: text/plain; charset=" + charset.encode() + b"\r\n\r\n"
            + part + b"\r\n--B--\r\n")
    response = client.post("/departments", data=body,
                           content_type="multipart/form-data; boundary=B")
    assert response.status_code < 500
    no_surrogate_stored()
