"""TallyTestServer: aiohttp's TestServer serving an app the way `tally serve` does.

net/app.py's app has no middleware: net/transport.py's TallyRunner puts the app's Observer
(readiness gate, error envelope, metrics, request log) around it and serves it through Tally's
connection protocol. This test server does the same, so in-process tests exercise the pipeline
production runs, with handler cancellation off as there (aiohttp's test server turns it on).
"""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestServer
from aiohttp.web_runner import BaseRunner

from net.app import OBSERVER
from net.transport import TallyRunner


class TallyTestServer(TestServer):
    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        kwargs.pop("handler_cancellation", None)  # CONTRACT §4, §7.12: never cancel a write
        return TallyRunner(self.app, observer=self.app[OBSERVER], **kwargs)
