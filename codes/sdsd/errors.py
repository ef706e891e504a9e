"""The one exception type for user mistakes.

Entry points catch :class:`UserError` and print its message as a single line (no traceback) and exit
with status 2. Raise it for anything a user can fix: a missing file, a bad option, a checkpoint that
does not fit. Programming errors stay ordinary exceptions so their tracebacks remain visible.
"""

from __future__ import annotations

import functools
import sys


class UserError(Exception):
    """A mistake in the user's input; the message must say what is wrong and what to do."""


def cli_main(func):
    """Decorate a ``main()`` so that a :class:`UserError` becomes ``error: <message>`` and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            msg = " ".join(str(exc).split("\n"))
            print(f"error: {msg}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper
