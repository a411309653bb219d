"""Signatures: the documented vectors, and encodings that trip people up."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from dialer.zadarma.signing import (
    authorization_header,
    params_string,
    sign,
    verify_request,
    verify_webhook,
    webhook_signature,
)
from tests.conftest import KEY, SECRET


def reference_signature(method: str, params_str: str, secret: str) -> str:
    """Zadarma's recipe spelled out step by step, independent of the code under test."""
    md5 = hashlib.md5(params_str.encode()).hexdigest()
    hex_digest = hmac.new(secret.encode(), (method + params_str + md5).encode(), hashlib.sha1).hexdigest()
    return base64.b64encode(hex_digest.encode()).decode()


def test_balance_vector() -> None:
    header = authorization_header(KEY, "/v1/info/balance/", {"format": "json"}, SECRET)
    assert header == "k0k1k2k3k4k5k6k7k8k9:NWU4NGFjNzk1ZGMxMDEzYWYxMTU1NmM1NjUxMDM2ZGE4Zjk5ZTdiMQ=="


def test_callback_vector() -> None:
    params = {"format": "json", "from": 100, "predicted": 1, "sip": 100, "to": 442037691881}
    assert params_string(params) == "format=json&from=100&predicted=1&sip=100&to=442037691881"
    header = authorization_header(KEY, "/v1/request/callback/", params, SECRET)
    assert header == "k0k1k2k3k4k5k6k7k8k9:YjY0N2Y5Zjk4MDU1NmNiY2M4MmVkMzBiZDIzNWNiODI5MDc1YjU3Nw=="


def test_parameters_are_sorted_regardless_of_order() -> None:
    assert params_string({"to": "2", "from": "1", "format": "json"}) == "format=json&from=1&to=2"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"message": "Hello world"}, "message=Hello+world"),
        ({"number": "+442037691881"}, "number=%2B442037691881"),
        ({"start": "2024-05-01 12:00:00"}, "start=2024-05-01+12%3A00%3A00"),
        ({"message": "Привет"}, "message=%D0%9F%D1%80%D0%B8%D0%B2%D0%B5%D1%82"),
        ({"b": "x&y=z", "a": "1/2"}, "a=1%2F2&b=x%26y%3Dz"),
    ],
)
def test_rfc1738_encoding_like_php(params: dict[str, str], expected: str) -> None:
    assert params_string(params) == expected
    assert sign("/v1/sms/send/", params, SECRET) == reference_signature("/v1/sms/send/", expected, SECRET)


def test_no_parameters_signs_the_empty_string() -> None:
    assert params_string({}) == ""
    assert hashlib.md5(b"").hexdigest() == "d41d8cd98f00b204e9800998ecf8427e"
    assert sign("/v1/info/balance/", {}, SECRET) == reference_signature("/v1/info/balance/", "", SECRET)


def test_signature_shape_is_base64_of_hex() -> None:
    signature = sign("/v1/info/balance/", {"format": "json"}, SECRET)
    assert len(signature) == 56 and signature.endswith("==")


def test_server_side_verification_rejects_raw_digest_signatures() -> None:
    query = "format=json"
    good = authorization_header(KEY, "/v1/info/balance/", {"format": "json"}, SECRET)
    assert verify_request("/v1/info/balance/", query, good, KEY, SECRET)
    md5 = hashlib.md5(query.encode()).hexdigest()
    raw = hmac.new(SECRET.encode(), ("/v1/info/balance/" + query + md5).encode(), hashlib.sha1).digest()
    wrong = f"{KEY}:{base64.b64encode(raw).decode()}"
    assert not verify_request("/v1/info/balance/", query, wrong, KEY, SECRET)
    assert not verify_request("/v1/info/balance/", query, None, KEY, SECRET)
    assert not verify_request("/v1/info/balance/", query, good.replace(KEY, "x" * 20), KEY, SECRET)


def test_webhook_vector() -> None:
    fields = {
        "event": "NOTIFY_START",
        "caller_id": "442037691880",
        "called_did": "442037691881",
        "call_start": "2024-05-01 12:00:00",
    }
    expected = "NzA2MTM1YTRiMjlmZWVlYTIzMDZiNDZmY2VmN2FhOTU5M2Q4NWMzZQ=="
    assert webhook_signature(fields, SECRET) == expected
    assert verify_webhook(fields, expected, SECRET)
    assert not verify_webhook({**fields, "called_did": "442037691882"}, expected, SECRET)
    assert not verify_webhook(fields, None, SECRET)


@pytest.mark.parametrize(
    ("event", "signed"),
    [
        ("NOTIFY_INTERNAL", "442037691880442037691881" + "2024-05-01 12:00:00"),
        ("NOTIFY_ANSWER", "442037691880" + "101" + "2024-05-01 12:00:00"),
        ("NOTIFY_END", "442037691880442037691881" + "2024-05-01 12:00:00"),
        ("NOTIFY_OUT_START", "100" + "442037691881" + "2024-05-01 12:00:00"),
        ("NOTIFY_OUT_END", "100" + "442037691881" + "2024-05-01 12:00:00"),
        ("NOTIFY_RECORD", "out_123" + "rec_9"),
        ("NOTIFY_INTERNAL_END", "442037691880442037691881" + "2024-05-01 12:00:00"),
        ("NOTIFY_IVR", "442037691880442037691881" + "2024-05-01 12:00:00"),
    ],
)
def test_each_event_signs_its_own_fields(event: str, signed: str) -> None:
    fields = {
        "event": event,
        "caller_id": "442037691880",
        "called_did": "442037691881",
        "destination": "101" if event == "NOTIFY_ANSWER" else "442037691881",
        "internal": "100",
        "call_start": "2024-05-01 12:00:00",
        "pbx_call_id": "out_123",
        "call_id_with_rec": "rec_9",
    }
    expected = base64.b64encode(
        hmac.new(SECRET.encode(), signed.encode(), hashlib.sha1).hexdigest().encode()
    ).decode()
    assert webhook_signature(fields, SECRET) == expected


def test_unknown_event_has_no_signature() -> None:
    assert webhook_signature({"event": "NOTIFY_SOMETHING_NEW"}, SECRET) is None
    assert not verify_webhook({"event": "NOTIFY_SOMETHING_NEW"}, "abc", SECRET)
