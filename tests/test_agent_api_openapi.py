"""The agents' API's OpenAPI document: served at /api/openapi.json, a well-formed OpenAPI 3.1 document whose
references all resolve, naming exactly the routes the server serves; and what the server really sends (answers,
errors and server-sent events) matches the schemas it names.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel
from starlette.routing import Route

from dialer.agents.api import AgentApi
from dialer.agents.api_models import ErrorOut
from dialer.agents.openapi import ENDPOINTS, EVENTS, PREFIX, openapi_document
from tests.agent_api_support import CallCentre, SseReader, seed, serve, webhook
from tests.webhooks_support import answer, end, start

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture
def centre(tmp_path: Path) -> Iterator[CallCentre]:
    c = seed(tmp_path)
    yield c
    c.db.dispose()


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _schemas(node: Any) -> Iterator[dict[str, Any]]:
    """Every JSON-schema object below ``node`` (properties, items, anyOf members...)."""
    if not isinstance(node, dict):
        return
    yield node
    for key in ("properties", "$defs"):
        for sub in (node.get(key) or {}).values():
            yield from _schemas(sub)
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for sub in node.get(key) or []:
            yield from _schemas(sub)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from _schemas(node[key])


def test_the_document_is_well_formed_openapi_3_1() -> None:
    doc = openapi_document()
    assert doc["openapi"].startswith("3.1.") and doc["info"]["title"] and doc["info"]["version"]
    ops = [(path, method, op) for path, item in doc["paths"].items() for method, op in item.items()]
    assert ops and all(path.startswith(PREFIX + "/") for path, _, _ in ops)
    assert all(method in METHODS for _, method, _ in ops)
    ids = [op["operationId"] for _, _, op in ops]
    assert len(ids) == len(set(ids))
    schemes = set(doc["components"]["securitySchemes"])
    for path, method, op in ops:
        where = f"{method.upper()} {path}"
        assert op["summary"] and "200" in op["responses"], where
        for code, response in op["responses"].items():
            assert code.isdigit() and 200 <= int(code) < 600 and response["description"], (where, code)
            if int(code) >= 400:
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorOut"}
        for requirement in op["security"]:
            assert set(requirement) <= schemes, where
        for param in op.get("parameters", []):
            assert param["in"] in ("query", "header", "path", "cookie") and param["name"] and "schema" in param
        if "requestBody" in op:
            assert set(op["requestBody"]["content"]) == {"application/json"}, where
    for ref in _refs(doc):
        assert isinstance(_resolve(doc, ref), dict), ref
    for name, schema in doc["components"]["schemas"].items():
        for node in _schemas(schema):
            # A schema with no constraint (any JSON value) carries only annotations.
            assert {"type", "$ref", "anyOf", "oneOf", "allOf", "enum", "const"} & set(node) \
                or set(node) <= {"title", "description", "default", "examples"}, (name, node)  # fmt: skip
            if node.get("type") == "object" and "required" in node:
                assert set(node["required"]) <= set(node.get("properties", {})), name


def test_the_document_names_exactly_the_routes_served(centre: CallCentre) -> None:
    api = AgentApi(centre.db)
    served = {(PREFIX + r.path, m.lower()) for r in api.app.routes if isinstance(r, Route)
              for m in (r.methods or ()) if m != "HEAD"}  # fmt: skip
    doc = openapi_document()
    documented = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert served == documented
    assert len(served) == len(ENDPOINTS) >= 9
    with serve(centre.db) as (server, _api):
        r = httpx.get(server.url + "/api/openapi.json", timeout=10)
    assert r.status_code == 200 and r.json() == doc


def _check(model: type[BaseModel] | None, r: httpx.Response) -> dict[str, Any]:
    """The answer is the documented model (or, for an error, ErrorOut), field for field."""
    body = r.json()
    (model if r.status_code == 200 and model is not None else ErrorOut).model_validate(body)
    return dict(body)


def test_real_answers_errors_and_events_match_their_schemas(centre: CallCentre) -> None:
    by_name = {e.name: e.response for e in ENDPOINTS}
    with serve(centre.db) as (server, _api), httpx.Client(base_url=server.url, timeout=10) as http:
        r = http.post("/api/login", json={"login": "alice", "pin": "1234"})
        h = {"Authorization": f"Bearer {_check(by_name['login'], r)['token']}"}
        _check(by_name["me"], http.get("/api/me", headers=h))
        _check(by_name["state"], http.post("/api/state", json={"state": "ready"}, headers=h))
        sse = SseReader(server.url + "/api/events", h).start()
        phone = centre.phones[0]
        webhook(http, start(phone, "s"))
        webhook(http, answer(phone, "s", "101"))
        _check(by_name["call"], http.get("/api/call", headers=h))
        webhook(http, end(phone, "s", "101"))
        body = {"attempt_id": centre.attempt_ids[0], "code": "callback", "callback_at": "+2h", "only_me": True}
        out = _check(by_name["disposition"], http.post("/api/disposition", json=body, headers=h))
        assert out["callback"] is not None
        listed = _check(by_name["callbacks"], http.get("/api/callbacks", headers=h))
        assert len(listed["callbacks"]) == 1
        for r in (http.post("/api/state", json={"state": 5}, headers=h), http.get("/api/me"),
                  http.post("/api/disposition", json=body, headers=h)):  # fmt: skip
            assert r.status_code >= 400
            _check(None, r)
        _check(by_name["logout"], http.post("/api/logout", headers=h))
        sse.next("end")
        sse.stop()
    names = {e.name for e in sse.seen}
    assert {"state", "call", "call_ended", "wrapup_timer", "end"} <= names
    for event in sse.seen:
        EVENTS[event.name].model_validate(event.data)
