"""The one exception type users see: a one-line message that names the cause and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ArchlabError(Exception):
    """An error caused by the user's input or environment; the CLI prints it as one line, no traceback."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-blank line of an exception's message (its type name when empty): for one-line errors."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:limit]


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the run is left resumable."""
