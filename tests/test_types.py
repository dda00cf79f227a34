"""The type checker passes: mypy, configured by [tool.mypy] in pyproject.toml, over engine, wal,
net and bench (strict: every function annotated, untyped calls refused, unused ignores reported).

What: one run of mypy as a subprocess, from the repository root, as CI runs it.
How it could fail: a type error anywhere in those packages, a `type: ignore` that no longer
ignores anything, or a missing stub package; the failure message lists mypy's own report.
Run alone with `pytest -m types` (about 20 s cold, a few seconds with its cache in .venv).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
MYPY_TIMEOUT_S = 600  # a cold run on a loaded 2-core machine; normally ~20 s


@pytest.mark.types
def test_mypy_reports_no_errors() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=REPO_ROOT, check=False, capture_output=True, text=True,
        timeout=MYPY_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    assert done.stdout.startswith("Success: no issues found"), done.stdout
