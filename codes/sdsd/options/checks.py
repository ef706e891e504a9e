"""Value checks of the option schema: each schema entry names what its value may be.

A check is a callable that returns the value, brought to its canonical type where that is lossless (``!!float 5e3``
-> ``5000`` for an integer option, the string ``"1e-4"`` that PyYAML reads from ``1e-4`` -> ``0.0001``), or raises
:class:`Invalid`. Its ``allowed`` text says what is accepted; :func:`sdsd.options.validate` turns an
:class:`Invalid` into one line naming the file, the key, the value and that text.

Choices whose list lives with the code that implements them (paddings, metric channels, conv backends, the
registries of losses, schedules, datasets and networks) are looked up when a value is checked, so importing the
options package stays light and a newly registered component is accepted without editing the schema.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import unicodedata
from collections.abc import Callable, Mapping, Sequence

__all__ = [
    "REQUIRED",
    "Option",
    "Invalid",
    "Check",
    "anything",
    "boolean",
    "choice",
    "choice_from",
    "registered",
    "integer",
    "positive_int",
    "number",
    "ints",
    "numbers",
    "size_pair",
    "text",
    "folder_name",
    "scene_names",
    "mapping",
    "SHOWN",
    "clip",
    "show",
    "show_key",
]

REQUIRED = object()  # the default of a key that has none


class Invalid(ValueError):
    """A value outside what a check allows (the validator adds the file, the key and the allowed values).

    ``Invalid(reason)`` adds why, where the allowed text alone would not say it (``it contains a tab``).
    """


@dataclasses.dataclass(frozen=True)
class Option:
    """One schema entry.

    Attributes:
        default: the value filled in when the key is absent; :data:`REQUIRED` when it must be given. A key whose
            default is ``None`` also accepts ``null``.
        help: one sentence for the options reference.
        check: what the value may be (see the constructors in this module); ``None`` accepts anything.
    """

    default: object
    help: str
    check: Check | None = None

    def __post_init__(self):
        if self.default is None and self.check is not None:
            try:
                self.check(None)
            except Invalid:
                object.__setattr__(self, "check", _or_null(self.check, True))


class Check:
    """A value check: ``check(value) -> value`` or :class:`Invalid`; ``allowed`` describes the accepted values."""

    def __init__(self, allowed: str | Callable[[], str], func: Callable[[object], object]):
        self._allowed = allowed
        self._func = func

    @property
    def allowed(self) -> str:
        return self._allowed() if callable(self._allowed) else self._allowed

    def __call__(self, value):
        return self._func(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _as_number(value) -> float | int:
    """An int or float from a YAML value (strings such as ``1e-4`` included); :class:`Invalid` otherwise."""
    if isinstance(value, bool):
        raise Invalid
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise Invalid from None
    raise Invalid


def _as_int(value) -> int:
    number = _as_number(value)
    if isinstance(number, float):
        if not number.is_integer():
            raise Invalid
        return int(number)
    return number


def _bounds(minimum, maximum, above=None, below=None) -> str:
    parts = []
    if above is not None:
        parts.append(f"> {above:g}")
    if minimum is not None:
        parts.append(f">= {minimum:g}")
    if below is not None:
        parts.append(f"< {below:g}")
    if maximum is not None:
        parts.append(f"<= {maximum:g}")
    return " and ".join(parts)


def _in_bounds(number, minimum, maximum, above=None, below=None) -> bool:
    return ((minimum is None or number >= minimum) and (maximum is None or number <= maximum)
            and (above is None or number > above) and (below is None or number < below)
            and not (isinstance(number, float) and not math.isfinite(number)))


def _or_null(check: Check, null: bool) -> Check:
    if not null:
        return check
    return Check(lambda: f"{check.allowed}, or null", lambda v: None if v is None else check(v))


anything = Check("anything", lambda value: value)


def _boolean(value):
    if not isinstance(value, bool):
        raise Invalid
    return value


def boolean(null: bool = False) -> Check:
    """``true`` or ``false``."""
    return _or_null(Check("true or false", _boolean), null)


def choice(*values, null: bool = False) -> Check:
    """One of ``values`` (compared exactly: ``Y`` is not ``y``)."""

    def check(value):
        if isinstance(value, bool) or value not in values:
            raise Invalid
        return value

    return _or_null(Check(", ".join(str(v) for v in values), check), null)


def _resolve(ref: str):
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def choice_from(ref: str, null: bool = False) -> Check:
    """One of the names in the sequence ``module:ATTR`` (imported when a value is checked)."""

    def check(value):
        if isinstance(value, bool) or not isinstance(value, str) or value not in _resolve(ref):
            raise Invalid
        return value

    return _or_null(Check(lambda: ", ".join(_resolve(ref)), check), null)


def registered(registry, null: bool = False) -> Check:
    """A name registered in ``registry`` (which imports its components' module when first read)."""

    def check(value):
        if not isinstance(value, str) or value not in registry.keys():
            raise Invalid
        return value

    return _or_null(Check(lambda: ", ".join(registry.keys()), check), null)


def integer(minimum: int | None = None, maximum: int | None = None, null: bool = False, odd: bool = False) -> Check:
    """An integer within the bounds (a whole float such as ``5e3`` is read as ``5000``); ``odd`` adds oddness."""
    bounds = _bounds(minimum, maximum)
    allowed = ("an odd integer" if odd else "an integer") + (f" {bounds}" if bounds else "")

    def check(value):
        number = _as_int(value)
        if not _in_bounds(number, minimum, maximum) or (odd and number % 2 == 0):
            raise Invalid
        return number

    return _or_null(Check(allowed, check), null)


def positive_int(null: bool = False) -> Check:
    """An integer >= 1."""
    return integer(minimum=1, null=null)


def number(minimum: float | None = None, maximum: float | None = None, above: float | None = None,
           below: float | None = None, null: bool = False) -> Check:
    """A real number within the bounds (``above`` / ``below`` are exclusive bounds); returned as a float."""
    bounds = _bounds(minimum, maximum, above, below)
    allowed = "a number" + (f" {bounds}" if bounds else "")

    def check(value):
        try:
            num = float(_as_number(value))
        except OverflowError:  # an integer beyond the float range (YAML reads 400 digits as an int)
            raise Invalid from None
        if not _in_bounds(num, minimum, maximum, above, below):
            raise Invalid
        return num

    return _or_null(Check(allowed, check), null)


def _list_of(item: Check, what: str, null: bool) -> Check:
    def check(value):
        if not isinstance(value, (list, tuple)):
            raise Invalid
        return [item(v) for v in value]

    return _or_null(Check(f"a list of {what}", check), null)


def ints(minimum: int | None = None, null: bool = True) -> Check:
    """A list of integers (each within the bound)."""
    bounds = _bounds(minimum, None)
    return _list_of(integer(minimum), "integers" + (f" {bounds}" if bounds else ""), null)


def numbers(minimum: float | None = None, null: bool = True) -> Check:
    """A list of numbers (each within the bound)."""
    bounds = _bounds(minimum, None)
    return _list_of(number(minimum), "numbers" + (f" {bounds}" if bounds else ""), null)


def _size_pair(value):
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise Invalid
    pair = [_as_int(v) for v in value]
    if min(pair) < 1:
        raise Invalid
    return pair


def size_pair(null: bool = True) -> Check:
    """``[W, H]``: two positive integers."""
    return _or_null(Check("[W, H], two positive integers", _size_pair), null)


def _text(value):
    # A name or path written as a number in YAML (``name: 2024``) is the string the user meant.
    if _is_int(value) or isinstance(value, float):
        return str(value)
    if not isinstance(value, str) or not value:
        raise Invalid
    return value


def text(what: str = "a string", null: bool = False) -> Check:
    """A non-empty string (``what`` names it in messages: a path, a name)."""
    return _or_null(Check(what, _text), null)


#: Unicode categories refused in a folder name: control characters (tab, newline, NUL, DEL, ESC, C1 controls) and
#: the line and paragraph separators, which break a path across lines in logs and shells.
_CONTROL = {"Cc", "Zl", "Zp"}


def _control_character(text: str) -> str | None:
    """The first control character of ``text`` as a Python escape (``'\\t'``), or ``None``."""
    for ch in text:
        if unicodedata.category(ch) in _CONTROL:
            return ascii(ch)
    return None


def _folder_name(value):
    value = _text(value)
    separators = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if not value.strip() or value in (".", "..") or any(sep in value for sep in separators):
        raise Invalid
    control = _control_character(value)
    if control is not None:
        raise Invalid(f"it contains the control character {control}")
    return value


def folder_name() -> Check:
    """One non-empty folder name: not ``.`` or ``..``, no ``/`` or ``\\``, no control character.

    The experiment ``name`` becomes ``<root>/experiments/<name>`` (archived on reuse), so ``""`` would make that
    folder ``experiments/`` itself and archiving it would move every other experiment aside; a tab, a newline or
    another control character (NUL included) would make a folder that logs, shells and scripts cannot name.
    """
    return Check("one folder name without '/' or '\\', not '.' or '..' (e.g. my_run)", _folder_name)


def _scene_names(value):
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) or _is_int(v) for v in value):
        return list(value)
    raise Invalid


def scene_names(null: bool = True) -> Check:
    """Scene names: a comma-separated string (``pair13,pair15``) or a list of names."""
    return _or_null(Check("comma-separated scene names (or a list of them)", _scene_names), null)


def _mapping(value):
    if not isinstance(value, dict):
        raise Invalid
    return value


mapping = Check("a mapping of keys to values", _mapping)


#: The most characters of a user's value (or key) that a message shows; a longer one is cut, ending in ``...``.
SHOWN = 80


def clip(text, limit: int = SHOWN) -> str:
    """``text`` (made a string) cut to ``limit`` characters, the cut marked with ``...``."""
    text = str(text)
    return text if len(text) <= limit else text[:max(limit - 3, 0)] + "..."


def show_key(key) -> str:
    """A key for a message: as written when it is a printable string, else its Python form; cut to :data:`SHOWN`."""
    if isinstance(key, str) and key.isprintable():
        return clip(key)
    return clip(ascii(key) if isinstance(key, str) else _show(key, SHOWN + 1))


def show(value, limit: int = SHOWN) -> str:
    """A value as the user wrote it in YAML terms (``null``, ``true``, ``'Y'``, ``[1, 2]``), cut to ``limit``
    characters.

    Only about ``limit`` characters are ever built, however large (or, from Python, self-containing) the value is.
    """
    return clip(_show(value, limit + 1), limit)


def _show(value, budget: int) -> str:
    """:func:`show` without the cut: stops adding items once ``budget`` characters are written, so a result from
    which something was left out has at least ``budget`` characters (and :func:`show` marks the cut)."""
    if budget <= 0:
        return "..."
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, bytes)):
        return repr(value[:budget])
    if isinstance(value, (Sequence, Mapping)):
        items = value.items() if isinstance(value, Mapping) else value
        parts, used = [], 1
        for item in items:
            if used > budget:
                break
            if isinstance(value, Mapping):
                key = _show(item[0], budget - used)
                part = f"{key}: {_show(item[1], budget - used - len(key) - 2)}"
            else:
                part = _show(item, budget - used)
            parts.append(part)
            used += len(part) + 2
        opening, closing = ("{", "}") if isinstance(value, Mapping) else ("[", "]")
        return opening + ", ".join(parts) + closing
    try:
        return repr(value)
    except ValueError:  # an integer too long to write out (Python refuses beyond 4300 digits)
        return "an integer of more than 4300 digits"
