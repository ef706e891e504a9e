"""The one exception type for user mistakes.

Entry points catch :class:`UserError` and print its message as a single line (no traceback) and exit
with status 2. Raise it for anything a user can fix: a missing file, a bad option, a checkpoint that
does not fit. Programming errors stay ordinary exceptions so their tracebacks remain visible.
"""

from __future__ import annotations

import functools
import re
import sys


class UserError(Exception):
    """A mistake in the user's input; the message must say what is wrong and what to do."""


#: Sentences of torch.load's weights-only error that explain the loading mode, not what was refused.
_BOILERPLATE = re.compile(
    r"^(weights only load failed\.?|in pytorch 2\.6, we changed|re-running `torch\.load`|"
    r"check the documentation of torch\.load|please file an issue|this file can still be loaded|"
    r"\(1\)|\(2\) alternatively|do it only if you got the file)", re.IGNORECASE)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def exception_reason(exc: BaseException, limit: int = 240) -> str:
    """The one line of ``exc``'s message that says what went wrong, at most ``limit`` characters.

    ``torch.load(weights_only=True)`` wraps the refusal (e.g. ``Unsupported global: GLOBAL os.system was not an
    allowed global by default.``, ``Trying to load unsupported GLOBAL posix.system whose module posix is
    blocked.``, ``Unsupported operand 149``) in several sentences about the loading mode and how to switch it off;
    those are dropped: the text after ``WeightsUnpickler error:`` when present, else the message without the
    ``Weights only load failed.`` preamble, is split into lines, boilerplate lines are skipped, and the first
    sentence of the first remaining line is kept. Other messages keep their first sentence likewise. Whitespace is
    collapsed and a longer result is cut with ``...``; an empty message gives the exception's type name.
    """
    text = _ANSI.sub("", str(exc))
    if "WeightsUnpickler error:" in text:
        text = text.rsplit("WeightsUnpickler error:", 1)[1]
    lines = [" ".join(line.split()) for line in text.splitlines()]
    lines = [line for line in lines if line]
    kept = [line for line in lines if not _BOILERPLATE.match(line)]
    if not kept and lines:
        # Only the preamble: keep what follows "Weights only load failed." on its line, if anything.
        rest = re.sub(r"^weights only load failed\.?\s*", "", lines[0], flags=re.IGNORECASE)
        kept = [rest] if rest and not _BOILERPLATE.match(rest) else []
    if not kept:
        return type(exc).__name__
    # The first sentence: names such as os.system hold dots, but a sentence ends at ". " before a capital.
    reason = re.split(r"(?<=[.!?])\s+(?=[A-Z])", kept[0], maxsplit=1)[0]
    return reason if len(reason) <= limit else reason[:limit - 3].rstrip() + "..."


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
