"""Where `serve` writes: the access log on stdout, one line a request
(server.log_request writes them), and trouble and the few events an
operator wants to see on stderr. Imports nothing of Tally's.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger("tally")
access_log = logging.getLogger("tally.access")


class AccessLogHandler(logging.StreamHandler):
    """The access log on stdout. When stdout's reader goes away (`serve |
    head -1`), the access log ends with one line on stderr; serving goes on
    (the logging module would print a traceback for every request)."""

    def handleError(self, record: logging.LogRecord) -> None:
        if not isinstance(sys.exc_info()[1], OSError):
            super().handleError(record)
            return
        access_log.removeHandler(self)
        access_log.addHandler(logging.NullHandler())
        # Nothing buffered may fail again at exit: stdout points at nothing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        log.error("access log stopped: standard output was closed (%s)",
                  type(sys.exc_info()[1]).__name__)


def setup(quiet: bool) -> None:
    # Trouble, and the few events an operator wants to see (TALLY_KEEP_DAYS'
    # daily pass), on stderr; the access log on stdout.
    messages = logging.StreamHandler(sys.stderr)
    messages.setLevel(logging.INFO)
    messages.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(messages)
    log.setLevel(logging.INFO)
    log.propagate = False
    access = AccessLogHandler(sys.stdout)
    access.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    access_log.handlers[:] = [access]
    access_log.setLevel(logging.WARNING if quiet else logging.INFO)
    access_log.propagate = False
