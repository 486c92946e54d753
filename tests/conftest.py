"""Shared fixtures. Importing dmi_tf first sets TF_USE_LEGACY_KERAS for every test.

The library's messages are printed to stdout, as the command-line tools print
them: a test reads (and a failure report shows) what a user sees.
"""

import dmi_tf  # noqa: F401
from dmi_tf.console import log_to_stdout

log_to_stdout()
