"""The dashboard's routes in-process (net/dashboard.py): static while recovering, probe gated.

What: before `open_app` (recovery running) the page, its assets and the icon are served (they
touch no runtime) while the session probe, like every keyed route, is 503 not_ready; after it, the
probe answers. How: aiohttp's TestServer around create_app(config, None) and then open_app with
the FakeRuntime. How it could fail: the readiness gate blocking the page (a blank screen while a
large ledger recovers) or letting a keyed route reach the half-built runtime.
"""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from net.app import create_app, open_app
from net.config import ServerConfig
from net.dashboard import ASSETS, SESSION_PATH
from tests.app_server import TallyTestServer
from tests.net.conftest import GOOD_KEY, PROJECT, FakeRuntime


async def test_static_files_are_served_while_recovering_and_the_probe_is_gated() -> None:
    app = create_app(ServerConfig(), None)
    async with TestClient(TallyTestServer(app)) as client:
        for path in ASSETS:
            response = await client.get(path)
            assert response.status == 200, path
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert await response.read()
        response = await client.get(SESSION_PATH, headers={"Authorization": f"Bearer {GOOD_KEY}"})
        assert response.status == 503
        assert (await response.json())["error"]["code"] == "not_ready"
        open_app(app, FakeRuntime())
        response = await client.get(SESSION_PATH, headers={"Authorization": f"Bearer {GOOD_KEY}"})
        assert response.status == 200
        assert await response.json() == {"admin": False, "project": PROJECT}
        response = await client.get("/dashboard/nothing-here")
        assert response.status == 404
