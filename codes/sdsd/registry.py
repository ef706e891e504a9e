"""Name -> class registries, so a YAML file can name a component by ``type``.

Each registry knows the module whose import registers its components and imports it (by name) the first time it
is read, so a reader (the option schema, the protocol presets) never has to import the components' package
itself: the registry is the one link between them.
"""

from __future__ import annotations

import difflib
import importlib

from sdsd.errors import UserError


class Registry:
    """A mapping from names to callables, filled with the :meth:`register` decorator.

    Args:
        kind: what the registry holds ("network", "dataset", ...), used in error messages.
        module: the module whose import registers the components (imported on the first read).
    """

    def __init__(self, kind: str, module: str | None = None):
        self.kind = kind
        self.module = module
        self._items: dict[str, object] = {}

    def _load(self) -> None:
        if self.module is not None:
            importlib.import_module(self.module)  # a module being imported right now is returned as it is

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
        self._load()
        if name not in self._items:
            close = difflib.get_close_matches(str(name), list(self._items), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (valid: {', '.join(sorted(self._items))})"
            raise UserError(f"unknown {self.kind} {name!r}{hint}")
        return self._items[name]

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._items

    def keys(self):
        self._load()
        return sorted(self._items)


ARCH_REGISTRY = Registry("network", "sdsd.archs")
DATASET_REGISTRY = Registry("dataset mode", "sdsd.data")
LOSS_REGISTRY = Registry("loss", "sdsd.losses")
SCHEDULER_REGISTRY = Registry("lr_scheme", "sdsd.training.schedulers")
