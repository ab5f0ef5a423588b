"""A test-only crash point: the archival process SIGKILLs itself at a named stage.

The crash-safety tests (tests/retention/test_archive_crash.py) run archival in a real subprocess with
``MUTT_ARCHIVE_KILL_AT`` set to a stage name, so that it dies exactly between an effect (files written,
partition detached or dropped) and the inventory recording it; the next run must finish the work.
Unset (always, outside those tests) it costs one dictionary lookup per stage.
"""

from __future__ import annotations

import os
import signal

STAGES = ("export", "verify", "detach", "drop", "expire")


def checkpoint(stage: str) -> None:
    if os.environ.get("MUTT_ARCHIVE_KILL_AT") == stage:
        os.kill(os.getpid(), signal.SIGKILL)
