"""Bodies no JSON endpoint can use (design.md "Never a 500 for bad input"): nesting too
deep to decode within the 64 KiB limit, and lone surrogates ("\\ud800", which no database
or mail can store) in any string. Every endpoint that reads a body answers 400 with the
contract's error body, and nothing is written."""
from __future__ import annotations

import json

import pytest
from api_setup import assert_error, bearer, build_world, utcnow, with_prompt
from web.helpers import snapshot

from portal.extensions import db
from portal.services import requests as service
from portal.services.actors import CLI

LIMIT = 64 * 1024
NESTED = {
    "arrays": "[" * (LIMIT // 2) + "]" * (LIMIT // 2),
    "unclosed arrays": "[" * LIMIT,
    "objects": '{"a":' * 10_922 + "1" + "}" * 10_922,
    "in a field": '{"device": ' + "[" * 32_000 + "]" * 32_000 + "}",
}
# What every body-reading endpoint is sent, and with which token.
BODY_ENDPOINTS = {
    ("POST", "/api/v1/session-requests"): "tech",
    ("PUT", "/api/v1/agent/state"): "device",
    ("POST", "/api/v1/agent/prompts/{rid}"): "device",
    ("POST", "/api/v1/agent/sessions"): "device",
    ("POST", "/api/v1/agent/otp/request"): "device",
    ("POST", "/api/v1/agent/otp/verify"): "device",
}
# A string field of each endpoint, with an otherwise valid body around it.
STRING_FIELDS = [
    ("POST", "/api/v1/session-requests", {"device": "{device}"}, "device"),
    ("POST", "/api/v1/session-requests", {"device": "{device}"}, "run_as"),
    ("POST", "/api/v1/session-requests", {"device": "{device}"}, "reason"),
    ("PUT", "/api/v1/agent/state", {"locked": False}, "logged_in_user"),
    ("POST", "/api/v1/agent/prompts/{rid}", {}, "decision"),
    ("POST", "/api/v1/agent/otp/request", {}, "username"),
    ("POST", "/api/v1/agent/otp/request", {"username": "jsmith"}, "email"),
    ("POST", "/api/v1/agent/otp/request", {"username": "jsmith"}, "login"),
    ("POST", "/api/v1/agent/otp/verify", {"username": "a", "email": "a@example.com"},
     "password"),
    ("POST", "/api/v1/agent/otp/verify", {"email": "a@example.com", "password": "1"},
     "username"),
]
SURROGATES = ["\ud800", "a\udfffb", "\udc00\ud800"]


@pytest.fixture
def w(make):
    w = build_world(make)
    with_prompt(w)
    w.rid = service.create_session_request(
        technician=w.tech, device_name=w.device.name, actor=CLI, now=utcnow(),
        base_url="http://portal.test").id
    db.session.commit()
    return w


def send(client, w, method, url, data: str):
    token = w.tech_token if BODY_ENDPOINTS[(method, url)] == "tech" else w.device_token
    return client.open(url.format(rid=w.rid), method=method, data=data.encode(),
                       content_type="application/json", headers=bearer(token))


def test_the_table_names_every_api_endpoint_that_takes_a_body(app):
    routes = {(method, rule.rule.replace("<int(max=2147483647):request_id>", "{rid}"))
              for rule in app.url_map.iter_rules() if rule.endpoint.startswith("api.")
              and rule.endpoint != "api.unknown"
              for method in rule.methods & {"POST", "PUT", "PATCH"}}
    takes_no_body = {("POST", "/api/v1/session-requests/{rid}/cancel"),
                     ("POST", "/api/v1/agent/sessions/<int(max=2147483647):session_id>/end"),
                     ("POST", "/api/v1/agent/client-sessions/"
                              "<int(max=2147483647):session_id>/end")}
    assert routes - takes_no_body == set(BODY_ENDPOINTS)


@pytest.mark.parametrize("shape", NESTED)
@pytest.mark.parametrize("method,url", BODY_ENDPOINTS)
def test_nesting_too_deep_to_decode_is_400(client, w, method, url, shape):
    assert len(NESTED[shape]) <= LIMIT
    before = snapshot()
    response = send(client, w, method, url, NESTED[shape])
    error = assert_error(response, 400)
    assert error["code"] == "bad_request"
    assert snapshot() == before


@pytest.mark.parametrize("method,url,base,field", STRING_FIELDS,
                         ids=[f"{u.rsplit('/', 1)[-1]}-{f}" for _, u, _, f in STRING_FIELDS])
def test_a_lone_surrogate_in_any_string_field_is_400(client, w, subtests, method, url, base,
                                                     field):
    for value in SURROGATES:
        with subtests.test(value=repr(value)):
            payload = {k: v.format(device=w.device.name) if isinstance(v, str) else v
                       for k, v in base.items()}
            payload[field] = value
            before = snapshot()
            # json.dumps writes the surrogate as its \ud800 escape, as a client would.
            response = send(client, w, method, url, json.dumps(payload))
            error = assert_error(response, 400)
            assert error["code"] == "bad_request"
            assert "surrogate" in error["message"]
            assert snapshot() == before


@pytest.mark.parametrize("method,url", BODY_ENDPOINTS)
def test_a_lone_surrogate_anywhere_in_the_body_is_400(client, w, subtests, method, url):
    for body in ['{"\\ud800": 1}', '{"extra": ["ok", {"deep": "\\udfff"}]}',
                 '{"request_id": 1, "note": "\\ud800"}']:
        with subtests.test(body=body):
            before = snapshot()
            assert assert_error(send(client, w, method, url, body), 400)["code"] == \
                "bad_request"
            assert snapshot() == before


def test_a_surrogate_pair_is_one_character_and_welcome(client, w):
    response = client.post("/api/v1/session-requests",
                           data=json.dumps({"device": w.device_b.name,
                                            "reason": "laptop \U0001f4bb"}),
                           content_type="application/json", headers=bearer(w.tech_token))
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["reason"] == "laptop \U0001f4bb"
