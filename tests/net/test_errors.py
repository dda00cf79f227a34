"""net/errors.py over the registry engine/core/codes.py: the envelope's status, type and retryable
come from the code (CONTRACT §3.14); request ids. Could fail if a code is answered with another
status than its registry row, or a type other than §3.14's for that status."""

import msgspec
import pytest

from engine.core.codes import CODES
from net.errors import ClientError, HttpError, error_response, new_request_id

TYPES_314 = {400: "bad_request", 401: "auth_error", 403: "permission_denied", 404: "not_found",
             405: "bad_request", 409: "conflict", 413: "bad_request", 422: "unprocessable",
             429: "rate_limited", 500: "server_error", 503: "server_error"}  # fmt: skip


@pytest.mark.parametrize("code", sorted(CODES))
def test_envelope_from_the_registry(code: str) -> None:
    response = error_response(code, "text", {"field": "x"}, "req_1")
    status = CODES[code].status
    assert response.status == status
    assert response.headers["X-Request-Id"] == "req_1"
    assert response.content_type == "application/json"
    assert msgspec.json.decode(response.body) == {
        "error": {"code": code, "type": TYPES_314[status], "message": "text", "details": {"field": "x"},
                  "retryable": status in (429, 503), "request_id": "req_1"}
    }  # fmt: skip


def test_registry_statuses() -> None:
    assert CODES["insufficient_balance"].status == 400
    assert CODES["transaction_conflict"].status == 409
    assert CODES["customer_not_found"].status == 404
    assert CODES["request_too_large"].status == 413
    assert CODES["overloaded"].retryable and CODES["storage_unavailable"].retryable
    assert not CODES["invalid_json"].retryable


def test_details_default_to_empty_object() -> None:
    body = msgspec.json.decode(error_response("invalid_json", "m", None, "req_2").body)
    assert body["error"]["details"] == {}


def test_request_ids_unique_and_shaped() -> None:
    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 24 and i.startswith("req_") and int(i[4:], 16) >= 0 for i in ids)


def test_client_error_is_4xx_only_and_codes_are_registered() -> None:
    with pytest.raises(AssertionError):
        ClientError("overloaded", "a 503 is not a client error")
    with pytest.raises(KeyError):
        HttpError("no_such_code", "unregistered")
