"""Errors a user can fix, and how they reach the terminal: one line, no traceback, non-zero exit.

nerfstudio's commands (``ns-train``, ``ns-eval``, ...) own their ``main``; our configs and dataparser raise inside
them. Importing the plugin (nerfstudio's entry-point discovery does) installs an ``excepthook`` that prints errors
of type ``UserError`` as ``error: <message>`` and leaves every other exception to the previous hook, untouched.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Optional, Type


class UserError(Exception):
    """Marker base: bad input or configuration, explained by its one-line message."""


def _excepthook(
    exc_type: Type[BaseException], exc: BaseException, tb: Optional[TracebackType], previous=sys.excepthook
) -> None:
    if isinstance(exc, UserError):
        print(f"error: {exc}", file=sys.stderr)
        return
    previous(exc_type, exc, tb)


def install_excepthook() -> None:
    """Route UserError to a one-line message (idempotent)."""
    if getattr(sys.excepthook, "__name__", "") != "_excepthook":
        sys.excepthook = _excepthook
