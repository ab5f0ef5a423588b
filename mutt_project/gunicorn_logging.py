"""Gunicorn's logger for MUTT: an access line for every request except accepted ingest requests.

Ingest is the one route called thousands of times a second, by machines. A line for each accepted
event would cost the server about a seventh of its single-event throughput (measured with
``make bench``) and bury every other request. Accepted ingest requests are counted in the metrics
instead (``mutt_ingest_*``); a refused one (4xx, 5xx) is still logged, as is every other request.
``MUTT_ACCESS_LOG_INGEST=true`` logs accepted ingest requests too.
"""

from __future__ import annotations

import os
from typing import Any

from gunicorn.glogging import Logger

from ingest import ROUTE_ENDINGS
from mutt_project.envparse import env_bool


class AccessLogger(Logger):
    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.log_accepted_ingest = env_bool(os.environ, "MUTT_ACCESS_LOG_INGEST", False)

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if (
            not self.log_accepted_ingest
            and 200 <= (resp.status_code or 0) < 300
            and environ.get("PATH_INFO", "").endswith(ROUTE_ENDINGS)
        ):
            return
        super().access(resp, req, environ, request_time)
