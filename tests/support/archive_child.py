"""Run one archival policy in a process of its own: ``python -m tests.support.archive_child events 2020-06-15``.

The crash tests set ``MUTT_ARCHIVE_KILL_AT`` so that this process SIGKILLs itself at a stage; the exit
status then says it died (-9), and whatever it left is for the next run to finish.
"""

from __future__ import annotations

import sys
from datetime import datetime


def main(argv: list[str]) -> int:
    import django

    django.setup()
    from retention.archive.policy import ArchivesPolicy, EventsPolicy
    from tests.support.archive import run_policy

    policy = {"events": EventsPolicy, "archives": ArchivesPolicy}[argv[0]]()
    run = run_policy(policy, datetime.fromisoformat(argv[1]), hold="--hold" in argv, actor="system:child")
    print(run.outcome, run.error)
    return 0 if run.outcome != "failed" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
