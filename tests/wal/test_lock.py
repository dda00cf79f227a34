"""wal/lock.py: one process per data directory.

What: a second holder, in another process or in this one, gets DataDirLocked at once; after
release (or the holder's exit) the lock is free again.
How: a real subprocess tries to take the lock the test holds.
Could fail if: the lock blocks, is advisory per process only, or survives its holder.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from wal import DataDirLock, DataDirLocked

ROOT = Path(__file__).resolve().parents[2]
TRY_LOCK = """
import sys
from wal import DataDirLock, DataDirLocked
try:
    DataDirLock(sys.argv[1]).acquire()
except DataDirLocked:
    sys.exit(3)
sys.exit(0)
"""


def try_in_subprocess(directory: Path) -> int:
    return subprocess.run([sys.executable, "-c", TRY_LOCK, str(directory)], cwd=ROOT, timeout=30).returncode


def test_second_process_is_refused_while_held(tmp_path):
    with DataDirLock(tmp_path) as lock:
        assert lock.held
        assert try_in_subprocess(tmp_path) == 3
    assert try_in_subprocess(tmp_path) == 0
    assert (tmp_path / "LOCK").exists()


def test_second_lock_in_the_same_process_is_refused(tmp_path):
    first = DataDirLock(tmp_path)
    first.acquire()
    with pytest.raises(DataDirLocked) as caught:
        DataDirLock(tmp_path).acquire()
    assert caught.value.path == tmp_path / "LOCK"
    first.release()
    first.release()
    with DataDirLock(tmp_path):
        pass
