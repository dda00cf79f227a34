"""Suite-wide: how many HTTP front processes every `tally serve` a test starts runs with.

TALLY_TEST_WORKERS=N (default 1) becomes TALLY_WORKERS=N in this process's environment, which the
servers the tests start inherit (tests/system/server.py passes os.environ on); `tally serve`
reads it as its --workers default (net/cli.py). Without it they would default to the number of
cores. .ci/run runs the system, api, fuzz and crash suites a second time with N=2.
"""

import os

os.environ["TALLY_WORKERS"] = os.environ.get("TALLY_TEST_WORKERS", "1")
