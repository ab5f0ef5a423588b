"""The processes of a django-q2 cluster (``qcluster``) end when the process that started them ends.

``qcluster`` forks a sentinel, which forks the workers, a pusher and a monitor. Killed alone (the OOM
killer, a SIGKILL), the ``qcluster`` process leaves them all running: the sentinel never looks at its
parent. Its supervisor (``mutt up``) then starts another cluster beside the orphaned one, and stops only
the new one's process group on exit: the orphans would run jobs until the machine restarts (seen: a
SIGKILLed ``qcluster`` left its sentinel and four processes running, reparented to init).

So in the ``qcluster`` process every child that multiprocessing forks asks the kernel for SIGTERM when
its parent dies (Linux ``PR_SET_PDEATHSIG``), and their children in turn: the sentinel and everything
below it end with ``qcluster``. django-q2 forks them from each process's main thread, the thread whose
end the kernel watches. A task cut short this way is run again (ADR-014).
"""

from __future__ import annotations

import ctypes
import multiprocessing.util
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent() -> None:
    """From now on, each process multiprocessing forks from this one (and from those) ends with its parent."""
    if not sys.platform.startswith("linux"):
        return
    multiprocessing.util.register_after_fork(_die_with_parent, _ask_for_sigterm)


def _ask_for_sigterm(_: object) -> None:
    # Runs in the forked child, before its target; the parent is the process that forked it.
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


class _Registration:
    """register_after_fork keys its callbacks by a weakly referenced object: this one lives for good."""


_die_with_parent = _Registration()
