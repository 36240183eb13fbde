"""Child processes that must not outlive the process that started them."""

from __future__ import annotations

import contextlib
import os
import signal


def die_with_parent(parent: int) -> None:
    """Linux prctl PR_SET_PDEATHSIG: this process gets SIGKILL when ``parent`` goes,
    even on kill -9. Call it first thing in a forked child."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent was gone before prctl took hold
        os._exit(0)
