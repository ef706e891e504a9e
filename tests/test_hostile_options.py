"""Hostile option files, overrides and sidecars: each is one short line naming the file (or option) and what to do.

Alias bombs, deep nesting, huge values, duplicate keys, control characters in the experiment name and malformed
training-statistics sidecars must never give a traceback, a line of megabytes, or a silently wrong result.
"""

import json
import os
import subprocess
import sys

import pytest

from sdsd import options
from sdsd.errors import UserError
from sdsd.exposure import read_sidecar, resolve_target, sidecar_path
from sdsd.options.checks import show

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_FILE = os.path.join(ROOT, "options", "test", "test_in_sdsd.yml")
#: A message may name a long path, but never carry a whole value: this bounds every line these tests provoke.
SHORT = 400


def write(tmp_path, text, name="opt.yml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def refused(call, *args, match=None) -> str:
    """The message of the UserError ``call(*args)`` raises: one short line (and matching ``match``)."""
    with pytest.raises(UserError, match=match) as err:
        call(*args)
    text = str(err.value)
    assert "\n" not in text and len(text) < SHORT, text[:SHORT]
    return text


def bomb(levels: int, key: str = "name") -> str:
    """A "billion laughs" value: each level an anchored list of 9 aliases of the level below (9**levels strings)."""
    parts = ['&l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        parts.append(f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return f"{key}: [" + ", ".join(parts) + "]"


# -- (a) alias bombs, nesting and size ----------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [5, 8])
def test_alias_bomb_is_refused_before_it_expands(tmp_path, levels):
    path = write(tmp_path, bomb(levels) + "\n")
    assert os.path.getsize(path) < 450
    text = refused(options.load, path, match="more than 20000 values once its aliases")
    assert text.startswith(path)


def test_alias_bomb_in_an_override_is_refused():
    text = refused(options.load, TEST_FILE, [bomb(6, "gpu_ids").replace(": ", "=", 1)],
                   match="^--set 'gpu_ids=.*more than 20000 values")
    assert "..." in text


def test_alias_bomb_through_the_cli_is_one_short_line(tmp_path):
    path = write(tmp_path, bomb(8) + "\n")
    run = subprocess.run([sys.executable, "-m", "sdsd.options", "--check", path], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.startswith(f"error: {path}: ") and run.stderr.count("\n") == 1 and len(run.stderr) < SHORT


def test_a_few_aliases_and_merge_keys_still_load(tmp_path):
    path = write(tmp_path, "name: x\ngpu_ids: &ids [0, 1]\n"
                           "datasets:\n  val: &val {mode: video_samesize, dataroot_GT: a, dataroot_LQ: b}\n"
                           "  test:\n    <<: *val\n    dataroot_GT: c\n")
    opt = options.load(path)
    assert opt["gpu_ids"] == [0, 1]
    assert opt["datasets"]["test"]["dataroot_GT"] == "c" and opt["datasets"]["test"]["dataroot_LQ"] == "b"


@pytest.mark.parametrize("text, message", [
    ("name: x\ngpu_ids: " + "[" * 100000 + "]" * 100000 + "\n", "line 2: lists and mappings nested deeper than 32"),
    ("name: x\ngpu_ids: &a [*a]\n", "nested deeper than 32 levels once the aliases"),
    ("name: x\ngpu_ids: &a " + "[" * 20 + "1" + "]" * 20 + "\nlogger: " + "[" * 13 + "*a" + "]" * 13 + "\n",
     "line 2: lists and mappings nested deeper than 32 levels once the aliases"),
], ids=["deep", "self-alias", "deep-through-aliases"])
def test_deep_nesting_is_refused(tmp_path, text, message):
    refused(options.load, write(tmp_path, text), match=message)


def test_overlarge_option_file_is_refused_unread(tmp_path):
    path = write(tmp_path, "name: x\n" + "#" * (1 << 20) + "\n")
    refused(options.load, path, match=r"opt.yml: the option file is \d+ bytes; an option file is at most 1048576")


@pytest.mark.parametrize("override, message", [
    ("name=" + "x" * 100000 + "/", r"name is 'x{76}\.\.\.; allowed: one folder name"),
    ("x" * 100000 + "=1", r"unknown option x{77}\.\.\.; valid keys"),
    ("x" * 100000, r"^--set 'x{76}\.\.\.: expected key.path=value"),
    ("train.niter=" + "9" * 5000, r"line 1: the integer 9{77}\.\.\. has 5000 characters"),
    ("datasets.test.N_frames=" + "7" * 4001, r"datasets.test.N_frames is 7{77}\.\.\. but network_G.nframes is 5"),
    ("datasets." + "p" * 1000 + ".mode=SDSD", r"datasets.p{77}\.\.\. is not a phase name"),
    ("protocol.exposure=" + "1" * 400, r"protocol.exposure is 1{77}\.\.\.; allowed: off, auto, or a number"),
    ("train.lr_G=" + "1" * 400, r"train.lr_G is 1{77}\.\.\.; allowed: a number >= 0"),
    ("train.lr_G=.inf", r"train.lr_G is inf; allowed: a number >= 0"),
    ("gpu_ids=[" + ", ".join(["-1"] * 5000) + "]", r"gpu_ids is \[-1, -1, .*\.\.\.; allowed: a list of integers"),
    ("network_G=!!" + "t" * 100000 + " x", r"not valid YAML \(could not determine a constructor .*\.\.\.\)$"),
], ids=["name", "key", "no-equals", "long-int", "rule", "phase", "exposure-overflow", "number-overflow", "infinite",
        "list", "tag"])
def test_huge_values_are_cut_in_messages(override, message):
    refused(options.load, TEST_FILE, [override], match=message)


def test_huge_values_in_a_file_are_cut_in_messages(tmp_path):
    path = write(tmp_path, "name: x\n? " + "k" * 500000 + "\n: 1\n")  # an explicit key: a plain one is short
    refused(options.load, path, match=r"unknown option k{77}\.\.\.")
    path = write(tmp_path, f"name: x\nconv_backend: {'z' * 500000}\n")
    refused(options.load, path, match=r"conv_backend is 'z{76}\.\.\.; allowed: auto")


def test_world_size_echo_is_cut(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "w" * 100000)
    refused(options.load, os.path.join(ROOT, "options", "train", "train_in_sdsd.yml"), None, True,
            match=r"WORLD_SIZE environment variable is 'w{76}\.\.\.; it must be a process count")


def test_show_builds_only_a_short_text():
    """A self-containing Python list (which YAML cannot make) or a huge one is shown cut, without walking it."""
    loop = [1]
    loop.append(loop)
    assert show(loop).startswith("[1, [1, [1, ") and show(loop).endswith("...") and len(show(loop)) == 80
    assert len(show(list(range(10**6)))) == 80 and show([1, True, None, "Y"]) == "[1, true, null, 'Y']"
    assert show({"a": [1, 2]}) == "{'a': [1, 2]}"


# -- (b) duplicate keys ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("name: a\nuse_tb_logger: true\nname: b\n", r"opt.yml: key name is given twice \(lines 1 and 3\); keep one$"),
    ("name: x\ntrain:\n  niter: 3\n  lr_G: 1.0e-4\n  niter: 4\n", r"key train.niter is given twice \(lines 3 and 5\)"),
    ("name: x\ngpu_ids: [{a: 1, a: 2}]\n", r"key gpu_ids\[0\].a is given twice \(lines 2 and 2\)"),
    ("name: x\n1: a\n1.0: b\n", r"key 1.0 is given twice \(lines 2 and 3\)"),
], ids=["top", "nested", "flow", "equal-numbers"])
def test_duplicate_keys_name_file_key_and_both_lines(tmp_path, text, message):
    path = write(tmp_path, text)
    assert refused(options.load, path, match=message).startswith(path)


def test_duplicate_key_in_an_override_value():
    refused(options.load, TEST_FILE, ["network_G={nf: 8, nf: 16}"], match=r"^--set .*key nf is given twice")


# -- (c) control characters in the experiment name -------------------------------------------------------------------


@pytest.mark.parametrize("name, shown", [("a\tb", r"'\\t'"), ("a\nb", r"'\\n'"), ("run\x1b[31m", r"'\\x1b'"),
                                          ("x\x7f", r"'\\x7f'"), ("x\x00", r"'\\x00'"), ("a\u2028b", r"'\\u2028'")],
                         ids=["tab", "newline", "escape", "delete", "nul", "line-separator"])
def test_experiment_name_with_a_control_character_is_refused(tmp_path, name, shown):
    path = write(tmp_path, "name: " + json.dumps(name) + "\n")
    message = rf"opt.yml: name is .*; it contains the control character {shown}; allowed: one folder name"
    refused(options.load, path, match=message)
    refused(options.load, TEST_FILE, ["name=" + json.dumps(name)], match=r"name is .*control character")


def test_experiment_name_checks_kept(tmp_path):
    refused(options.load, TEST_FILE, ["name=''"], match="name is ''; allowed: one folder name")
    refused(options.load, TEST_FILE, ["name=a/b"], match="name is 'a/b'; allowed: one folder name")
    assert options.load(TEST_FILE, ["name=été 2024"])["name"] == "été 2024"


# -- (d) malformed training-statistics sidecars ----------------------------------------------------------------------

GOOD_INPUT = {"mean_linear": 0.01, "percentiles_linear": {"99": [0.04, 0.05, 0.06]},
              "smoothed_percentiles_linear": {"99": [0.03, 0.03, 0.03]}, "noise_sigma": 0.02}


def sidecar(**fields) -> str:
    return json.dumps({"format": "sdsd-training-inputs", "version": 2, "windows": 4, "seed": 7, "input": GOOD_INPUT,
                       **fields})


MALFORMED = [
    ("input-list", sidecar(input=[1, 2]), "input is not an object"),
    ("deep", "[" * 100000 + "]" * 100000, "nested too deeply to read"),
    ("deep-inside", sidecar(input=None).replace("null", "[" * 100000 + "]" * 100000), "nested too deeply"),
    ("top-list", "[1, 2]", "it is a JSON list, not an object"),
    ("not-json", "{not json", "not JSON"),
    ("nan", sidecar(input={**GOOD_INPUT, "mean_linear": float("nan")}), "it holds NaN"),
    ("infinite", sidecar(input={**GOOD_INPUT, "noise_sigma": 1e999}).replace("Infinity", "1e999"),
     r"input.noise_sigma is not a finite number >= 0"),
    ("int-too-large", sidecar(input={**GOOD_INPUT, "noise_sigma": 10**400}),
     r"input.noise_sigma is not a finite number >= 0"),
    ("no-input", sidecar(input=None), "input is not an object"),
    ("no-mean", sidecar(input={"percentiles_linear": {"99": [0.1, 0.1, 0.1]}}), "input has no mean_linear"),
    ("mean-text", sidecar(input={**GOOD_INPUT, "mean_linear": "0.1"}), r"input.mean_linear is not a finite number"),
    ("no-percentiles", sidecar(input={"mean_linear": 0.1}), "input has no percentiles_linear"),
    ("table-list", sidecar(input={**GOOD_INPUT, "smoothed_percentiles_linear": [0.1]}),
     r"input.smoothed_percentiles_linear is not a table of percentiles holding \"99\""),
    ("empty-table", sidecar(input={**GOOD_INPUT, "smoothed_percentiles_linear": {}}), "holding \"99\""),
    ("entry-text", sidecar(input={**GOOD_INPUT, "percentiles_linear": {"99": "abc"}}),
     r"input.percentiles_linear\['99'\] is not a list of 3 numbers"),
    ("entry-big", sidecar(input={**GOOD_INPUT, "percentiles_linear": {"99": [0.1, 7, 0.1]}}),
     r"input.percentiles_linear\['99'\]\[1\] is not a finite number in \[0, 1\]"),
    ("white-zero", sidecar(input={**GOOD_INPUT, "smoothed_percentiles_linear": {"99": [0, 0, 0]}}),
     "white level .* is 0"),
    ("seed-bool", sidecar(seed=True), "seed is not an integer >= 0"),
    ("seed-negative", sidecar(seed=-1), "seed is not an integer >= 0"),
    ("seed-huge", sidecar(seed=2**70), "seed is not an integer >= 0 and <= 18446744073709551615"),
    ("windows-text", sidecar(windows="4"), "windows is not an integer"),
    ("gt-text", sidecar(gt="x"), "gt is not an object"),
    ("format", sidecar(format=["x"] * 100000), "format is a list, not 'sdsd-training-inputs'"),
    ("latin-1", b'{"format": "\xff"}', "not UTF-8 text"),
    ("huge", sidecar(padding="x" * (1 << 20)), r"it is \d+ bytes; a sidecar is a few KB"),
]


@pytest.mark.parametrize("content, message", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_sidecar_is_one_line_naming_the_file_and_the_fix(tmp_path, content, message):
    weights = str(tmp_path / "run_G.pth")
    mode = "wb" if isinstance(content, bytes) else "w"
    with open(sidecar_path(weights), mode) as f:
        f.write(content)
    text = refused(read_sidecar, weights, match=message)
    assert text.startswith(f"{sidecar_path(weights)} is not a valid training-statistics sidecar (")
    assert text.endswith(f"delete it, or rewrite it with python -m sdsd.tools.sidecar -opt TRAIN.yml {weights}")
    refused(resolve_target, "auto", weights, match="run_G.json")  # what enhance and evaluation call


def test_valid_sidecars_still_load(tmp_path):
    weights = str(tmp_path / "run_G.pth")
    with open(sidecar_path(weights), "w") as f:
        f.write(sidecar())
    assert read_sidecar(weights)["input"] == GOOD_INPUT
    assert resolve_target("auto", weights) == pytest.approx(0.03)
    with open(sidecar_path(weights), "w") as f:  # version 1: raw percentiles only, no seed or noise
        json.dump({"format": "sdsd-training-inputs", "version": 1,
                   "input": {"mean_linear": 0.01, "percentiles_linear": {"99": [0.04, 0.05, 0.06]}}}, f)
    assert resolve_target("auto", weights) == pytest.approx(0.05)


@pytest.mark.parametrize("value", [10**400, "9" * 500, -(10**400)])
def test_exposure_setting_with_a_huge_number_is_one_short_line(value):
    from sdsd.exposure import parse_setting

    with pytest.raises(UserError) as caught:
        parse_setting(value)
    assert len(str(caught.value)) < 200 and "\n" not in str(caught.value)
