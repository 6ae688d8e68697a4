"""Workers die with their build: a ``kill -9`` of ``mobiledeploy build`` must not leave a
converter running that finishes later and writes into the bundle.

Linux: the worker asks the kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``),
then checks the parent is still the build that started it (it may have died before the call).
"""

from __future__ import annotations

import os
import signal
import sys

PARENT_ENV = "MOBILEDEPLOY_BUILD_PID"  # the build's pid, set for every worker it starts
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> bool:
    """Arrange SIGKILL on the parent's death; exit now if the build is already gone.

    Returns whether the kernel guard is in place (False off Linux: nothing to do there).
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        armed = libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        armed = False
    expected = os.environ.get(PARENT_ENV)
    if expected and expected.isdigit() and os.getppid() != int(expected):
        os._exit(1)  # the build died before the guard was armed: do no work for nobody
    return armed
