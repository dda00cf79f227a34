"""net/errors.py: the envelope's type and retryable by status (CONTRACT §3.14), request ids."""

import msgspec
import pytest

from net.errors import ClientError, error_response, new_request_id


@pytest.mark.parametrize(
    "status, type_, retryable",
    [(400, "bad_request", False), (401, "auth_error", False), (403, "permission_denied", False),
     (404, "not_found", False), (405, "bad_request", False), (409, "conflict", False), (413, "bad_request", False),
     (422, "unprocessable", False), (429, "rate_limited", True), (500, "server_error", False),
     (503, "server_error", True)],
)
def test_envelope_by_status(status: int, type_: str, retryable: bool) -> None:
    response = error_response(status, "some_code", "text", {"field": "x"}, "req_1")
    assert response.status == status
    assert response.headers["X-Request-Id"] == "req_1"
    assert response.content_type == "application/json"
    assert msgspec.json.decode(response.body) == {
        "error": {"code": "some_code", "type": type_, "message": "text", "details": {"field": "x"},
                  "retryable": retryable, "request_id": "req_1"}
    }


def test_details_default_to_empty_object() -> None:
    body = msgspec.json.decode(error_response(400, "c", "m", None, "req_2").body)
    assert body["error"]["details"] == {}


def test_request_ids_unique_and_shaped() -> None:
    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 24 and i.startswith("req_") and int(i[4:], 16) >= 0 for i in ids)


def test_client_error_is_4xx_only() -> None:
    with pytest.raises(AssertionError):
        ClientError(503, "x", "y")
