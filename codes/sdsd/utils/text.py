"""Short texts for messages: the first line of an exception's message."""

from __future__ import annotations

__all__ = ["first_line"]


def first_line(exc: BaseException, limit: int | None = None, empty: str | None = None) -> str:
    """The first line of ``str(exc)`` with surrounding whitespace stripped, cut to ``limit`` characters.

    Args:
        exc: the exception.
        limit: the most characters returned (``None``: no cut).
        empty: what an empty (or whitespace-only) message gives; ``None``: the exception's type name.
    """
    text = str(exc).strip()
    line = text.splitlines()[0] if text else (type(exc).__name__ if empty is None else empty)
    return line if limit is None else line[:limit]
