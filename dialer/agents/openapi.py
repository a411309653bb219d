"""The agents' HTTP API as data: every endpoint (method, path, body, answer, errors) and the OpenAPI 3.1 document
built from that list and the pydantic models of ``dialer.agents.api_models``.

Invariant: ``dialer.agents.api`` serves exactly the endpoints listed here (it builds its routes from ``ENDPOINTS``,
and a test checks the served routes against the document), so the document cannot miss or invent one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

import dialer
from dialer.agents.api_models import (
    CallbacksOut,
    CallEndedEvent,
    CallOut,
    CallRecord,
    DispositionBody,
    DispositionOut,
    EndEvent,
    ErrorOut,
    LoginBody,
    LoginOut,
    LogoutBody,
    LogoutOut,
    MeOut,
    StateBody,
    StateChangeOut,
    StateEvent,
    WrapupEvent,
)

PREFIX = "/api"
ERRORS = {
    400: "The body is not JSON (or is empty where JSON is needed).",
    401: "Wrong login or PIN; or no token, an unknown one, or one that expired or was revoked.",
    403: "The call was not routed to this agent.",
    404: "No such call attempt (or endpoint).",
    409: "Not possible from the agent's state now (e.g. a disposition saved twice, an extension in use).",
    413: "The body is larger than 64 KiB.",
    422: "The body or a parameter is not valid: `detail` lists each field and what is wrong with it.",
    429: "Too many wrong PINs for this login or from this address: `detail.retry_after_s` says when to try again "
         "(also in the Retry-After header).",
}
# Server-sent events of GET /api/events: name -> the model of its JSON data.
EVENTS: dict[str, type[BaseModel]] = {
    "state": StateEvent,
    "call": CallRecord,
    "call_ended": CallEndedEvent,
    "wrapup_timer": WrapupEvent,
    "end": EndEvent,
}


@dataclass(frozen=True)
class Query:
    name: str
    description: str
    minimum: int
    maximum: int


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # under PREFIX
    name: str  # the handler's name and the operationId
    summary: str
    description: str = ""
    body: type[BaseModel] | None = None
    body_optional: bool = False
    response: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    auth: bool = True
    query: tuple[Query, ...] = ()
    events: bool = False


_BODY_ERRORS = (400, 413, 422)
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("POST", "/login", "login", "Log in with login and PIN: a session token",
             "The token expires (12 h by default) and ends at POST /api/logout. Logging in does not change the "
             "agent's state: POST /api/state `ready` starts taking calls. Wrong PINs are limited per login and per "
             "address (429).", body=LoginBody, response=LoginOut, errors=(*_BODY_ERRORS, 401, 429), auth=False),
    Endpoint("POST", "/logout", "logout", "Log out: the agent leaves (after the call they are in) and the token ends",
             body=LogoutBody, body_optional=True, response=LogoutOut, errors=(*_BODY_ERRORS, 401)),
    Endpoint("GET", "/me", "me", "The agent, their state and their campaigns (with pause codes and dispositions)",
             response=MeOut, errors=(401,)),
    Endpoint("POST", "/state", "state", "Ready, pause with a code, or log out",
             "During a call a pause or logout waits for the call's end (`deferred`); `ready` then takes it back.",
             body=StateBody, response=StateChangeOut, errors=(*_BODY_ERRORS, 401, 409)),
    Endpoint("GET", "/call", "call", "The call routed to the agent now, with the contact's record (screen-pop)",
             "Without `attempt_id`: the call the agent is ringing, talking or wrapping up on (`call` null when "
             "none). With it: that call's record, if it was routed to this agent.", response=CallOut,
             errors=(401, 403, 404, 422),
             query=(Query("attempt_id", "A call attempt routed to this agent.", 1, 2**62),)),
    Endpoint("POST", "/disposition", "disposition", "Save the disposition of a call the agent handled",
             "Moves the contact on (done, retry, a scheduled callback, or the do-not-call list at once) and ends "
             "the agent's wrap-up for that call.", body=DispositionBody, response=DispositionOut,
             errors=(*_BODY_ERRORS, 401, 403, 404, 409)),
    Endpoint("GET", "/callbacks", "callbacks", "The agent's scheduled callbacks, earliest first",
             "Those kept for the agent (only me) and those scheduled from their calls; `due` says which are due.",
             response=CallbacksOut, errors=(401, 422),
             query=(Query("limit", "At most this many (default 100).", 1, 1000),)),
    Endpoint("GET", "/events", "events", "Server-sent events: the agent's own state changes and calls",
             "Events: `state` (StateEvent), `call` (CallRecord: the screen-pop, sent when a call is routed to the "
             "agent), `call_ended` (CallEndedEvent), `wrapup_timer` (WrapupEvent: when wrap-up ends), `end` (EndEvent: the "
             "session ended). Each event's `id` lets a reconnecting client resume with `Last-Event-ID`. "
             "EventSource cannot send headers: pass the token as `access_token` in the query instead.",
             errors=(401,), events=True),
    Endpoint("GET", "/openapi.json", "openapi", "This document", auth=False),
)


def openapi_document() -> dict[str, Any]:
    bodies: list[type[BaseModel]] = [e.body for e in ENDPOINTS if e.body is not None]
    answers: list[type[BaseModel]] = [ErrorOut, *(e.response for e in ENDPOINTS if e.response is not None),
                                      *EVENTS.values()]
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(m, "validation") for m in bodies]
    wanted += [(m, "serialization") for m in answers]
    refs, top = models_json_schema(wanted, ref_template="#/components/schemas/{model}")
    error_ref = refs[(ErrorOut, "serialization")]
    paths: dict[str, dict[str, Any]] = {}
    for e in ENDPOINTS:
        op: dict[str, Any] = {"operationId": e.name, "summary": e.summary, "tags": ["agents"],
                              "security": [{"bearer": []}, *([{"access_token": []}] if e.events else [])]
                              if e.auth else []}  # fmt: skip
        if e.description:
            op["description"] = e.description
        params = [{"name": q.name, "in": "query", "required": False, "description": q.description,
                   "schema": {"type": "integer", "minimum": q.minimum, "maximum": q.maximum}} for q in e.query]
        if e.events:
            params += [{"name": "access_token", "in": "query", "required": False, "schema": {"type": "string"},
                        "description": "The token, for clients that cannot send an Authorization header."},
                       {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"},
                        "description": "Resume after this event id."}]  # fmt: skip
        if params:
            op["parameters"] = params
        if e.body is not None:
            op["requestBody"] = {"required": not e.body_optional,
                                 "content": {"application/json": {"schema": refs[(e.body, "validation")]}}}
        if e.events:
            ok: dict[str, Any] = {"description": "An endless text/event-stream of the events described above.",
                                  "content": {"text/event-stream": {"schema": {"type": "string"}}},
                                  "x-events": {name: refs[(m, "serialization")] for name, m in EVENTS.items()}}
        elif e.response is not None:
            ok = {"description": "OK", "content": {"application/json": {"schema": refs[(e.response, "serialization")]}}}
        else:
            ok = {"description": "This OpenAPI document.", "content": {"application/json": {"schema": {"type": "object"}}}}
        op["responses"] = {"200": ok, **{str(code): {"description": ERRORS[code],
                                                    "content": {"application/json": {"schema": error_ref}}}
                                         for code in e.errors}}  # fmt: skip
        paths.setdefault(PREFIX + e.path, {})[e.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "dialer agents API", "version": dialer.__version__,
                 "description": "What an agent's console needs: log in with a PIN, change state, see the call routed "
                                "to you with the contact's record, save its disposition, list your callbacks, and "
                                "follow your own events. Every error is JSON: {\"error\": \"...\", \"detail\": ...}."},
        "paths": paths,
        "components": {
            "schemas": top.get("$defs", {}),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "The token from POST /api/login."},
                "access_token": {"type": "apiKey", "in": "query", "name": "access_token",
                                 "description": "The same token in the query (GET /api/events only)."},
            },
        },
    }  # fmt: skip
