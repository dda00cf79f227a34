"""net/auth.py principal: its fast path for `Bearer <token>` passes the runtime exactly the token
bearer_token would (issue 14), for every spelling around it.

How it could fail: a token passed with a space or tab the slow path strips, a lower-case scheme or
an empty token treated differently by the two paths.
"""

import pytest
from aiohttp.test_utils import make_mocked_request

from engine.core.results import Rejected
from engine.runtime import Admin
from net.auth import bearer_token, principal
from net.errors import ClientError


class _Recorder:
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def authenticate(self, api_key: str) -> str | Admin | Rejected:
        self.tokens.append(api_key)
        return "proj"

    def has_project(self, project: str) -> bool:
        return True


@pytest.mark.parametrize(
    "header",
    ["Bearer k1", "Bearer  k1", "Bearer k1 ", "Bearer \tk1\t", "bearer k1", "BEARER k1", "Bearer k1 k2",
     "Bearer\tk1", "Bearer ", "Bearer  ", "Bearer \t", "Bearer", "Basic k1", ""],
)  # fmt: skip
def test_principal_passes_bearer_tokens_answer(header: str) -> None:
    runtime = _Recorder()
    request = make_mocked_request("POST", "/v1/billing/deduct", headers={"Authorization": header})
    expected = bearer_token(header)
    if expected is None:
        with pytest.raises(ClientError) as refused:
            principal(request, runtime)
        assert refused.value.code == "missing_api_key" and runtime.tokens == []
    else:
        assert principal(request, runtime) == "proj"
        assert runtime.tokens == [expected]
    assert bearer_token("Bearer  k1 ") == "k1"
