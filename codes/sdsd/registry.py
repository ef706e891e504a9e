"""Name -> class registries, so a YAML file can name a component by ``type``."""

from __future__ import annotations

import difflib

from sdsd.errors import UserError


class Registry:
    """A mapping from names to callables, filled with the :meth:`register` decorator.

    Args:
        kind: what the registry holds ("network", "dataset", ...), used in error messages.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, object] = {}

    def register(self, name: str | None = None, aliases: tuple[str, ...] = ()):
        """Register the decorated object under ``name`` (default: its ``__name__``) and ``aliases``."""

        def deco(obj):
            for key in (name or obj.__name__, *aliases):
                if key in self._items:
                    raise KeyError(f"{self.kind} {key!r} is registered twice")
                self._items[key] = obj
            return obj

        return deco

    def get(self, name: str):
        """Return the object registered as ``name``; a :class:`UserError` names the closest valid name."""
        if name not in self._items:
            close = difflib.get_close_matches(str(name), list(self._items), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (valid: {', '.join(sorted(self._items))})"
            raise UserError(f"unknown {self.kind} {name!r}{hint}")
        return self._items[name]

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def keys(self):
        return sorted(self._items)


ARCH_REGISTRY = Registry("network")
DATASET_REGISTRY = Registry("dataset mode")
LOSS_REGISTRY = Registry("loss")
SCHEDULER_REGISTRY = Registry("lr_scheme")
