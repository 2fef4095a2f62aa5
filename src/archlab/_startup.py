"""Ctrl-C while the ``archlab`` command is still importing torch: one line and exit code 130, no traceback.

The command's own handling (``archlab.cli.main``) starts only after several seconds of imports; until
then this handler stands in. It is installed only when the running program is the ``archlab`` command,
never when archlab is imported as a library.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path


def _exit_quietly(signum, frame) -> None:
    os.write(2, b"interrupted while starting; nothing was run\n")
    os._exit(130)  # mid-import: nothing to clean up, and unwinding an import could print a traceback


def guard_startup() -> None:
    """Until ``end_startup``, Ctrl-C exits quietly (only in the ``archlab`` command's main thread)."""
    if Path(sys.argv[0]).name != "archlab" or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _exit_quietly)


def end_startup() -> None:
    """Give Ctrl-C back to Python (a KeyboardInterrupt the command handles)."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is _exit_quietly:
        signal.signal(signal.SIGINT, signal.default_int_handler)
