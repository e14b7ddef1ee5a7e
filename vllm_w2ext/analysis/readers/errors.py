"""The one error every reader raises for a file it cannot read as the trace it expects (missing, or
another format). It is a ValueError, so callers that caught ValueError before still do; a trace that
is merely cut short is not an error: the readers return its complete part and say it was truncated."""
from __future__ import annotations


class UnreadableTrace(ValueError):
    """A trace file that is missing or is not the format its reader reads."""
