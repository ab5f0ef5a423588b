"""``python -m retention.archive.checksum_worker FILE 0,2,4``: the checksum of some row groups, as JSON.

The verifier runs one per core over the row groups of a Parquet file it fetched back (see
:mod:`.verify`). A plain subprocess rather than multiprocessing: spawn and forkserver re-import the
parent's main module (a job runner, a script), and fork copies a process with threads and connections.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    from retention.archive.schema import checksum_row_groups

    path, groups = argv[0], [int(group) for group in argv[1].split(",")]
    print(json.dumps(checksum_row_groups(path, groups)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
