"""Child processes that must not outlive their parent (the WAL flusher, the --workers fronts)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import Final

__all__ = ["die_with_parent"]

PR_SET_PDEATHSIG: Final = 1


def die_with_parent(parent_pid: int, exit_code: int) -> None:
    """SIGKILL this process when its parent dies (Linux prctl); exit `exit_code` now if it already
    did (it may have died before the prctl). Raises OSError when the prctl fails."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:
        os._exit(exit_code)
