"""Option files: load a YAML file, apply ``--set`` overrides, validate every key and value against the schema.

Usage::

    opt = sdsd.options.load("options/train/train_in_sdsd.yml", ["train.niter=10", "datasets.train.batch_size=4"],
                            is_train=True)

Loading uses a ``yaml.SafeLoader`` with limits (:func:`safe_load`): a file over 1 MiB, a document that nests deeper
than 32 levels or that its aliases expand past 20,000 values, and a key given twice in one mapping are refused, as
one line naming the file (and the lines). Every key must be in :mod:`sdsd.options.schema` (or its table of legacy keys);
an unknown key is a :class:`~sdsd.errors.UserError` naming the file, the key and the closest valid key. Every
value is checked by its schema entry, and the rules that relate keys (:mod:`sdsd.options.rules`) run before the
options are returned, so a bad value fails before any work, as one line naming the file, the key, the value and
what is allowed. Missing keys get their defaults, so the rest of the code can index the returned plain ``dict``
directly and trusts its values. ``protocol.preset`` (:mod:`sdsd.options.presets`) then fills the protocol and
dataset keys the file does not set with that paper's values (keys set explicitly win). Legacy keys are accepted and
dropped; ``train.channels_last: true`` becomes ``conv_backend: channels_last``. The program keys ``is_train`` and
``dist`` are set on the returned dict.
"""

from __future__ import annotations

import copy
import difflib
import os
import re

import yaml

from sdsd.errors import UserError
from sdsd.options.checks import REQUIRED, Invalid, Option, clip, show, show_key
from sdsd.options.presets import apply_preset
from sdsd.options.rules import check_options, check_training, require_train_section
from sdsd.options.schema import (
    DATASET_KEYS,
    LEGACY,
    NETWORK_KEYS,
    PUBLISHED_MODEL,
    SECTIONS,
    TOP_KEYS,
)

__all__ = ["load", "parse_set", "validate", "apply_overrides", "check_training", "published_network",
           "read_yaml", "safe_load", "markdown_reference", "update_readme"]

#: The largest option file read. The published files are about 3 KB; a file this large is not an option file.
MAX_FILE_BYTES = 1 << 20
#: The most values (scalars, lists and mappings, keys included) a document may have once every alias (``*name``) is
#: expanded: the published files have at most 160, so a long scene list fits a hundred times over, while a few
#: nested anchors that repeat each other ("billion laughs") would make millions that every message and copy walks.
MAX_NODES = 20_000
#: The deepest nesting of values (a top-level key's value is level 2), counting what aliases repeat: the published
#: files reach level 5.
MAX_DEPTH = 32

_MERGE = "tag:yaml.org,2002:merge"


class _Refused(yaml.YAMLError):
    """A document the option loader refuses (too deep, too large once expanded, a key given twice): the message is
    the user's line, without the file name."""


class _OptionLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with the limits of :func:`safe_load`, checked while the document is composed (before a
    Python object is built)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._path: list[str] = []  # where the node being composed is: its mapping keys and list positions

    def compose_node(self, parent, index):
        # PyYAML composes recursively: without this, deep nesting would end in a RecursionError traceback.
        if len(self._path) >= MAX_DEPTH:
            line = self.peek_event().start_mark.line + 1
            raise _Refused(f"line {line}: lists and mappings nested deeper than {MAX_DEPTH} levels; an option file "
                           "nests a few")
        # PyYAML passes a mapping value's key node as ``index``, a list item's position, and None for a key.
        self._path.append(index.value if isinstance(index, yaml.ScalarNode) else f"[{index}]"
                          if isinstance(index, int) else "?")
        try:
            return super().compose_node(parent, index)
        finally:
            self._path.pop()

    def _where(self, key) -> str:
        """The dotted path of ``key`` in the mapping being composed (``train.lr_G``, ``gpu_ids[0]``)."""
        path = "".join(part if part.startswith("[") else "." + part for part in self._path[1:] + [str(key)])
        return show_key(path.lstrip("."))

    def compose_mapping_node(self, anchor):
        node = super().compose_mapping_node(anchor)
        lines = {}  # key -> the line it was first given on
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE:
                continue  # merge keys (<<) may repeat and be overridden; non-scalar keys fail at construction
            line = key_node.start_mark.line + 1
            try:
                key = self.construct_object(key_node)
                given = key in lines
            except (yaml.YAMLError, TypeError, ValueError):
                continue  # an unhashable or unreadable key: reported when the mapping is constructed
            if given:
                raise _Refused(f"key {self._where(key)} is given twice (lines {lines[key]} and {line}); keep one")
            lines[key] = line
        return node

    def construct_yaml_int(self, node):
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # Python refuses to read integers of more than 4300 digits
            raise _Refused(f"line {node.start_mark.line + 1}: the integer {clip(node.value)} has "
                           f"{len(node.value)} characters; write a number that fits") from None

    def get_single_data(self):
        node = self.get_single_node()
        if node is None:
            return None
        _check_expansion(node, 1, {})
        return self.construct_document(node)


_OptionLoader.add_constructor("tag:yaml.org,2002:int", _OptionLoader.construct_yaml_int)


def _check_expansion(node, depth: int, seen: dict) -> tuple[int, int]:
    """``(values, levels)`` of ``node`` with every alias expanded; :class:`_Refused` past the limits.

    Each node is walked once (``seen`` keeps its counts by identity), so a bomb is measured without expanding it;
    an alias that repeats its own ancestor is an endless nesting and fails the depth limit.
    """
    if id(node) in seen:
        size, height = seen[id(node)]
    else:
        if depth > MAX_DEPTH:
            raise _Refused(f"line {node.start_mark.line + 1}: lists and mappings nested deeper than {MAX_DEPTH} "
                           "levels once the aliases (*name) are expanded; an option file nests a few")
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = []
        size, height = 1, 0
        for child in children:
            child_size, child_height = _check_expansion(child, depth + 1, seen)
            size, height = size + child_size, max(height, child_height)
            if size > MAX_NODES:
                break
        height += 1
        seen[id(node)] = size, height
    if size > MAX_NODES:
        raise _Refused(f"the document has more than {MAX_NODES} values once its aliases (*name) are expanded; an "
                       "option file has a few hundred: write the values out instead of repeating anchors")
    if depth - 1 + height > MAX_DEPTH:
        raise _Refused(f"line {node.start_mark.line + 1}: lists and mappings nested deeper than {MAX_DEPTH} levels "
                       "once the aliases (*name) are expanded; an option file nests a few")
    return size, height


def safe_load(text: str):
    """``yaml.safe_load`` of ``text`` with the option loader's limits.

    Refused, as :class:`yaml.YAMLError` (a subclass whose message is one line for the user): lists and mappings
    nested more than :data:`MAX_DEPTH` levels, more than :data:`MAX_NODES` values once every alias is expanded (a
    "billion laughs" document is measured without being expanded), a key given twice in one mapping (naming both
    lines; merge keys ``<<`` are not counted), and integers of more than 4300 digits.
    """
    loader = _OptionLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def with_defaults(section: str, block: dict | None) -> dict:
    """A copy of one option section (``"train"``, ``"datasets"`` for one ``datasets.<phase>`` block, ``"path"``,
    ``"network_G"``, ...) with every key it lacks set to the schema's default; keys without one stay missing.

    Code that takes a section as a plain dict calls this once and then reads every key as it is, so the schema is
    the one place a default is written. A block :func:`validate` returned comes back equal.
    """
    keys = DATASET_KEYS if section == "datasets" else SECTIONS[section]
    out = dict(block or {})
    for key, option in keys.items():
        if key not in out and option.default is not REQUIRED:
            out[key] = copy.deepcopy(option.default)
    return out


def published_network() -> dict:
    """The ``network_G`` block of the published option files (``which_model_G`` and the published sizes).

    The values are the schema's ``network_G`` defaults, the one place they are written.
    """
    block = {"which_model_G": PUBLISHED_MODEL}
    block.update({key: copy.deepcopy(o.default) for key, o in NETWORK_KEYS.items() if o.default is not None})
    return block


def _closest(key: str, valid) -> str:
    close = difflib.get_close_matches(str(key)[:200], list(valid), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(valid))}"


def parse_set(items: list[str] | None) -> list[tuple[list[str], object]]:
    """Parse ``a.b.c=value`` strings; values are YAML scalars (``1e-4``, ``true``, ``[1, 2]``, ``null``), read by
    :func:`safe_load` (so with its limits).

    Raises:
        UserError: an item has no ``=`` or an empty key, or its value is not YAML or is refused by the limits;
            the item is shown cut to 80 characters.
    """
    parsed = []
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {show(item)}: expected key.path=value, e.g. --set train.niter=1000")
        try:
            # Zero-padded digits (scene ids such as 0013) stay strings; YAML 1.1 would read them as octal numbers.
            if re.fullmatch(r"0\d+(,\s*\w+)*", raw.strip()):
                value = raw.strip()
            else:
                value = safe_load(raw) if raw.strip() else None
        except _Refused as exc:
            raise UserError(f"--set {show(item)}: {exc}") from None
        except yaml.YAMLError as exc:
            raise UserError(f"--set {show(item)}: the value is not valid YAML ({clip(_problem(exc))})") from None
        parsed.append(([k for k in key.strip().split(".")], value))
    return parsed


def apply_overrides(opt: dict, overrides: list[str] | None) -> dict:
    """Apply ``--set`` overrides in place (creating intermediate sections) and return ``opt``."""
    for keys, value in parse_set(overrides):
        node = opt
        for k in keys[:-1]:
            if node.get(k) is None:
                node[k] = {}
            if not isinstance(node[k], dict):
                raise UserError(f"--set {show_key('.'.join(keys))}: {show(k)} is not a section")
            node = node[k]
        node[keys[-1]] = value
    return opt


def _value(option: Option, value, where: str, source: str):
    """``value`` checked by its schema entry; a value outside what is allowed is one line naming key and value."""
    if value is None and option.default is None:
        return None
    if option.check is None:
        return value
    try:
        return option.check(value)
    except (Invalid, OverflowError) as exc:  # OverflowError: a check's float() of an integer beyond the float range
        why = f"; {exc}" if isinstance(exc, Invalid) and str(exc) else ""
        raise UserError(f"{source}: {where} is {show(value)}{why}; allowed: {option.check.allowed}") from None


def _check_block(block, keys: dict, legacy: dict, where: str, source: str, fill: bool) -> dict:
    """Check one section: unknown keys, each value, legacy keys (checked, then dropped), defaults."""
    if block is None:
        block = {}
    if not isinstance(block, dict):
        raise UserError(f"{source}: {where} must be a mapping, got {type(block).__name__}")
    for key in block:
        if key not in keys and key not in legacy:
            raise UserError(f"{source}: unknown option {where}.{show_key(key)}{_closest(key, keys)}")
    out = {}
    for key, option in keys.items():
        if key in block:
            out[key] = _value(option, block[key], f"{where}.{key}", source)
    for key, option in legacy.items():
        if key in block:
            _value(option, block[key], f"{where}.{key}", source)
    # Missing keys after the given values, so a bad value is reported as such even where a required key is missing.
    for key, option in keys.items():
        if key in block or not fill:
            continue
        if option.default is REQUIRED:
            raise UserError(f"{source}: missing required option {where}.{key}")
        out[key] = copy.deepcopy(option.default)
    return {key: out[key] for key in keys if key in out}


def _conv_backend(raw: dict, top: dict, source: str) -> None:
    """Map the legacy ``train.channels_last`` onto ``conv_backend`` (the one memory-format switch)."""
    train = raw.get("train")
    if not isinstance(train, dict) or train.get("channels_last") is None:
        return
    wants = train["channels_last"]
    if "conv_backend" in raw and (top["conv_backend"] == "channels_last") != wants:
        raise UserError(f"{source}: train.channels_last is {show(wants)} but conv_backend is "
                        f"{show(top['conv_backend'])}; train.channels_last is the old name of conv_backend: "
                        "channels_last, keep only conv_backend")
    if wants:
        top["conv_backend"] = "channels_last"


def validate(opt: dict, source: str = "<options>", is_train: bool = False, world_size: int | None = None) -> dict:
    """Validate a raw option dict, fill defaults and run the rules. Returns a new dict.

    Args:
        opt: the raw options (a YAML file's mapping, with overrides applied).
        source: the file name, for messages.
        is_train: also run the training rules (:func:`sdsd.options.rules.check_training`), fill the ``train``
            section even when the file has none, and set ``opt['is_train']``.
        world_size: processes that will train (default: ``WORLD_SIZE`` from torchrun, else 1).

    Raises:
        UserError: unknown key (with the closest valid one), a value outside what its key allows (naming the file,
            key, value and what is allowed), a missing required key, or options that contradict each other.

    The keys present in ``opt`` are the explicit ones: ``protocol.preset`` fills only the keys it sets that are
    absent (:func:`sdsd.options.presets.apply_preset`).
    """
    if not isinstance(opt, dict):
        raise UserError(f"{source}: an option file must be a YAML mapping of keys to values")
    legacy_top = LEGACY[""]
    for key in opt:
        if key not in TOP_KEYS and key not in legacy_top:
            raise UserError(f"{source}: unknown option {show_key(key)}{_closest(key, TOP_KEYS)}")
    top = {}
    for key, option in TOP_KEYS.items():
        if key == "datasets" or key in SECTIONS:
            continue
        if key in opt:
            top[key] = _value(option, opt[key], key, source)
        elif option.default is REQUIRED:
            raise UserError(f"{source}: missing required option {key}")
        else:
            top[key] = copy.deepcopy(option.default)
    for key, option in legacy_top.items():
        if key in opt:
            _value(option, opt[key], key, source)
    datasets = opt.get("datasets") or {}
    if not isinstance(datasets, dict):
        raise UserError(f"{source}: datasets must be a mapping of phase names (train, val, test) to dataset blocks")
    top["datasets"] = {}
    for phase, block in datasets.items():
        if show_key(phase) != str(phase):
            raise UserError(f"{source}: datasets.{show_key(phase)} is not a phase name (at most 80 printable "
                            "characters); name the block train, val or test (or e.g. val_2)")
        checked = _check_block(block, DATASET_KEYS, LEGACY["datasets"], f"datasets.{phase}", source, fill=True)
        checked["phase"] = str(phase).split("_")[0]
        top["datasets"][phase] = checked
    if is_train and not opt.get("train"):
        require_train_section(opt, source)  # before the section is filled (a clearer message than "missing niter")
    for section, keys in SECTIONS.items():
        # The train section is only filled (and its required keys enforced) when the file has one or trains.
        fill = section != "train" or "train" in opt or is_train
        top[section] = _check_block(opt.get(section), keys, LEGACY.get(section, {}), section, source, fill=fill)
    _conv_backend(opt, top, source)
    # After every value is checked and before the rules: the preset fills only what the file leaves unset.
    apply_preset(top, opt)
    paths = top["path"]
    root = paths.get("root") or "./"
    paths["root"] = root
    if not paths.get("experiments_root"):
        paths["experiments_root"] = os.path.join(root, "experiments", top["name"])
    if not paths.get("results_root"):
        paths["results_root"] = os.path.join(root, "results", top["name"])
    check_options(top, source)
    if is_train:
        check_training(top, world_size, source)
    top["is_train"] = bool(is_train)
    top["dist"] = False  # set by sdsd.training.train once torch.distributed is up
    return top


def _problem(exc: yaml.YAMLError) -> str:
    """What PyYAML says is wrong, on one line (its messages can quote the document: a tag, a key)."""
    return " ".join(str(getattr(exc, "problem", None) or exc).split())


def read_yaml(path: str) -> dict:
    """Read a YAML file with :func:`safe_load`; errors name the file (and the line for syntax errors).

    A file larger than :data:`MAX_FILE_BYTES` (1 MiB) is refused unread; what PyYAML says is cut to 80 characters.
    """
    if not os.path.isfile(path):
        raise UserError(f"option file not found: {path}")
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise UserError(f"{path}: the option file is {size} bytes; an option file is at most {MAX_FILE_BYTES} "
                            "bytes (the published ones are a few KB): is this the right file?")
        with open(path, encoding="utf-8") as f:
            text = f.read(MAX_FILE_BYTES + 1)
        if len(text.encode("utf-8")) > MAX_FILE_BYTES:
            raise UserError(f"{path}: the option file is larger than {MAX_FILE_BYTES} bytes; an option file is a "
                            "few KB: is this the right file?")
        data = safe_load(text)
    except _Refused as exc:
        raise UserError(f"{path}: {exc}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise UserError(f"{path}:{line}: YAML syntax error: {clip(_problem(exc))}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: YAML error: {clip(_problem(exc))}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the option file ({clip(exc)})") from None
    if data is None:
        raise UserError(f"{path}: the option file is empty")
    return data


def load(path: str, overrides: list[str] | None = None, is_train: bool | None = None) -> dict:
    """Load, override and validate an option file: the one place every entry point checks its options.

    Args:
        path: the YAML file.
        overrides: ``a.b.c=value`` strings (the ``--set`` arguments), applied before validation.
        is_train: the options are for training: the training rules run too (with ``WORLD_SIZE`` from torchrun as
            the number of processes); stored as ``opt['is_train']``.

    Returns:
        The validated options as a plain dict with defaults filled in.
    """
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise UserError(f"{path}: an option file must be a YAML mapping of keys to values")
    apply_overrides(raw, overrides)
    return validate(raw, source=path, is_train=bool(is_train))


def _cell(text: str) -> str:
    # Angle brackets (experiments/<name>) would be read as HTML tags by Markdown renderers, | ends a cell.
    return text.replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def _shown(default) -> str:
    if default is REQUIRED:
        return "required"
    return yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()


def markdown_reference() -> str:
    """Render the schema as Markdown tables (the README's options reference is generated from this)."""

    def table(title: str, keys: dict) -> list[str]:
        lines = [f"#### `{title}`", "", "| key | default | allowed | meaning |", "| --- | --- | --- | --- |"]
        for key, option in keys.items():
            allowed = option.check.allowed if option.check is not None else "anything"
            lines.append(f"| `{key}` | `{_shown(option.default)}` | {_cell(allowed)} | {_cell(option.help)} |")
        return lines + [""]

    out = table("top level", TOP_KEYS) + table("datasets.<phase>", DATASET_KEYS)
    for section, keys in SECTIONS.items():
        out += table(section, keys)
    out += ["#### legacy keys", "",
            "Keys of the published (and older) option files that this implementation does not use: they are accepted "
            "where shown, checked where a different value would ask for something it does not do, and dropped from "
            "the loaded options. `is_train` and `dist` are set by the program.", "",
            "| key | published | allowed | note |", "| --- | --- | --- | --- |"]
    for section, keys in LEGACY.items():
        prefix = "datasets.<phase>." if section == "datasets" else f"{section}." if section else ""
        for key, option in keys.items():
            allowed = option.check.allowed if option.check is not None else "anything"
            out.append(f"| `{prefix + key}` | `{_shown(option.default)}` | {_cell(allowed)} | "
                       f"{_cell(option.help)} |")
    return "\n".join(out) + "\n"


README_START, README_END = "<!-- options:start -->", "<!-- options:end -->"


def update_readme(path: str, check: bool = False) -> bool:
    """Rewrite the options reference between the README's markers from the schema.

    Args:
        path: the README.
        check: only report whether the README is current; write nothing.

    Returns:
        Whether the README was already current.
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if README_START not in text or README_END not in text:
        raise UserError(f"{path}: no {README_START} ... {README_END} markers for the options reference")
    head, rest = text.split(README_START, 1)
    body, tail = rest.split(README_END, 1)
    fresh = "\n" + markdown_reference().rstrip("\n") + "\n"
    if body == fresh:
        return True
    if not check:
        from sdsd.utils.io import atomic_write_text

        atomic_write_text(head + README_START + fresh + README_END + tail, path)
    return False

