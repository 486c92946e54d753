"""The command-line view of the library's messages: plain lines on stdout.

Library modules report through ``logging.getLogger(__name__)`` and configure no
handler, so the caller decides what it sees (with none, INFO messages are
dropped and warnings go to stderr). The command-line tools call
:func:`log_to_stdout`: their users watch these lines as the run's progress.
"""

from __future__ import annotations

import logging
import sys

#: The logger every module's ``logging.getLogger(__name__)`` reports to.
PACKAGE = "dmi_tf"


class _Stdout(logging.StreamHandler):
    """Writes each message to ``sys.stdout`` as it is at that moment, then flushes.

    Looked up per message: tests and ``contextlib.redirect_stdout`` replace
    ``sys.stdout`` after the handler exists. Flushed, so progress shows live.
    """

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        del value


def log_to_stdout() -> None:
    """Prints the library's INFO messages and above to stdout as plain lines (once, if repeated)."""
    logger = logging.getLogger(PACKAGE)
    if not any(isinstance(handler, _Stdout) for handler in logger.handlers):
        handler = _Stdout()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    # Once: a handler on the root logger (logging.basicConfig) would print every line again.
    logger.propagate = False
