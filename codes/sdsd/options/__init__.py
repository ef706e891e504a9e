"""Option files: load a YAML file, apply ``--set`` overrides, validate every key against the schema.

Usage::

    opt = sdsd.options.load("options/train/train_in_sdsd.yml", ["train.niter=10", "datasets.train.batch_size=4"])

Loading uses ``yaml.safe_load``. Every key must be in :mod:`sdsd.options.schema`; an unknown key is a
:class:`~sdsd.errors.UserError` naming the file, the key and the closest valid key. Missing keys get their
defaults, so the rest of the code can index the returned plain ``dict`` directly.
"""

from __future__ import annotations

import copy
import difflib
import os
import re

import yaml

from sdsd.errors import UserError
from sdsd.options.schema import ANY, DATASET_KEYS, REQUIRED, SECTIONS, TOP_KEYS

__all__ = ["load", "parse_set", "validate", "apply_overrides", "markdown_reference", "update_readme"]


def _closest(key: str, valid) -> str:
    close = difflib.get_close_matches(str(key), list(valid), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(valid))}"


def parse_set(items: list[str] | None) -> list[tuple[list[str], object]]:
    """Parse ``a.b.c=value`` strings; values are YAML scalars (``1e-4``, ``true``, ``[1, 2]``, ``null``).

    Raises:
        UserError: an item has no ``=`` or an empty key.
    """
    parsed = []
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: expected key.path=value, e.g. --set train.niter=1000")
        try:
            # Zero-padded digits (scene ids such as 0013) stay strings; YAML 1.1 would read them as octal numbers.
            if re.fullmatch(r"0\d+(,\s*\w+)*", raw.strip()):
                value = raw.strip()
            else:
                value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise UserError(f"--set {item!r}: the value is not valid YAML ({exc.problem})") from None
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
                raise UserError(f"--set {'.'.join(keys)}: {k!r} is not a section")
            node = node[k]
        node[keys[-1]] = value
    return opt


def _coerce(value, default, where: str):
    """Bring YAML values to the default's type where that is lossless (``!!float 5e3`` -> 5000)."""
    if value is None or default is None or default is REQUIRED:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(value, str) and isinstance(default, (int, float)):
        # PyYAML reads 1e-4 (no dot) as a string; accept it as the number the user meant.
        try:
            value = float(value)
        except ValueError:
            raise UserError(f"{where}: expected a number, got {value!r}") from None
    if isinstance(default, int) and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, (int, float)) and not isinstance(value, (int, float)) or isinstance(value, bool):
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            raise UserError(f"{where}: expected a number, got {value!r}")
    return value


def _check_block(block, keys: dict, where: str, source: str, fill: bool) -> dict:
    if block is None:
        block = {}
    if not isinstance(block, dict):
        raise UserError(f"{source}: {where} must be a mapping, got {type(block).__name__}")
    for key in block:
        if key not in keys:
            raise UserError(f"{source}: unknown option {where}.{key}{_closest(key, keys)}")
    out = {}
    for key, (default, _help) in keys.items():
        if key in block:
            out[key] = _coerce(block[key], default, f"{source}: {where}.{key}")
        elif default is REQUIRED:
            if fill:
                raise UserError(f"{source}: missing required option {where}.{key}")
        elif fill:
            out[key] = copy.deepcopy(default)
    return out


def validate(opt: dict, source: str = "<options>") -> dict:
    """Validate a raw option dict and fill defaults. Returns a new dict.

    Raises:
        UserError: unknown key (with the closest valid one), wrong type, missing required key.
    """
    if not isinstance(opt, dict):
        raise UserError(f"{source}: an option file must be a YAML mapping of keys to values")
    top = {}
    for key in opt:
        if key not in TOP_KEYS:
            raise UserError(f"{source}: unknown option {key}{_closest(key, TOP_KEYS)}")
    for key, (default, _help) in TOP_KEYS.items():
        if key == "datasets" or key in SECTIONS:
            continue
        if key in opt:
            top[key] = _coerce(opt[key], default, f"{source}: {key}")
        elif default is REQUIRED:
            raise UserError(f"{source}: missing required option {key}")
        else:
            top[key] = copy.deepcopy(default)
    datasets = opt.get("datasets") or {}
    if not isinstance(datasets, dict):
        raise UserError(f"{source}: datasets must be a mapping of phase names (train, val, test) to dataset blocks")
    top["datasets"] = {}
    for phase, block in datasets.items():
        checked = _check_block(block, DATASET_KEYS, f"datasets.{phase}", source, fill=True)
        checked["phase"] = str(phase).split("_")[0]
        top["datasets"][phase] = checked
    for section, keys in SECTIONS.items():
        # The train section is only filled (and its required keys enforced) when the file has one.
        fill = section != "train" or "train" in opt
        if keys is ANY:
            top[section] = opt.get(section) or {}
            continue
        top[section] = _check_block(opt.get(section), keys, section, source, fill=fill)
    if top["scale"] != 1:
        raise UserError(f"{source}: scale must be 1 (SDSD-Net does not change resolution)")
    paths = top["path"]
    root = paths.get("root") or "./"
    paths["root"] = root
    if not paths.get("experiments_root"):
        paths["experiments_root"] = os.path.join(root, "experiments", top["name"])
    if not paths.get("results_root"):
        paths["results_root"] = os.path.join(root, "results", top["name"])
    return top


def read_yaml(path: str) -> dict:
    """Read a YAML file with ``yaml.safe_load``; errors name the file (and the line for syntax errors)."""
    if not os.path.isfile(path):
        raise UserError(f"option file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise UserError(f"{path}:{line}: YAML syntax error: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: YAML error: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the option file ({exc})") from None
    if data is None:
        raise UserError(f"{path}: the option file is empty")
    return data


def load(path: str, overrides: list[str] | None = None, is_train: bool | None = None) -> dict:
    """Load, override and validate an option file.

    Args:
        path: the YAML file.
        overrides: ``a.b.c=value`` strings (the ``--set`` arguments), applied before validation.
        is_train: stored as ``opt['is_train']`` when given.

    Returns:
        The validated options as a plain dict with defaults filled in.
    """
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise UserError(f"{path}: an option file must be a YAML mapping of keys to values")
    apply_overrides(raw, overrides)
    opt = validate(raw, source=path)
    if is_train is not None:
        opt["is_train"] = is_train
    return opt


def markdown_reference() -> str:
    """Render the schema as Markdown tables (the README's options reference is generated from this)."""

    def table(title: str, keys: dict) -> list[str]:
        lines = [f"#### `{title}`", "", "| key | default | meaning |", "| --- | --- | --- |"]
        for key, (default, help_text) in keys.items():
            shown = "required" if default is REQUIRED else yaml.safe_dump(default, default_flow_style=True).strip()
            shown = shown.removesuffix("...").strip()
            # Angle brackets (experiments/<name>) would be read as HTML tags by Markdown renderers.
            help_text = help_text.replace("<", "&lt;").replace(">", "&gt;")
            lines.append(f"| `{key}` | `{shown}` | {help_text} |")
        return lines + [""]

    out = table("top level", TOP_KEYS) + table("datasets.<phase>", DATASET_KEYS)
    for section, keys in SECTIONS.items():
        out += table(section, keys)
    return "\n".join(out)


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


def published_network() -> dict:
    """The ``network_G`` block of the published configurations (the schema's defaults)."""
    from sdsd.options.schema import NETWORK_KEYS

    block = {k: v[0] for k, v in NETWORK_KEYS.items() if v[0] is not None}
    return {"which_model_G": "denoise_illumination_enhance", **block}
