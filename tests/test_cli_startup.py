"""Every command answers ``--help`` and argument errors before it loads PyTorch.

Each command runs in a fresh interpreter, as a user starts it (``python -m MODULE`` through :mod:`runpy`, or the
root script), and reports which heavy modules were imported by the time it exited. Speed is what
docs/performance.md reports, not what this checks: the check is that nothing heavy is imported before the
arguments are parsed.
"""

import glob
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = sorted(f"sdsd.tools.{os.path.basename(p)[:-3]}"
               for p in glob.glob(os.path.join(ROOT, "codes", "sdsd", "tools", "*.py"))
               if not p.endswith("__init__.py"))
COMMANDS = ["sdsd.enhance", "sdsd.export", "sdsd.demo", "sdsd.options", *TOOLS,
            "train.py", "quantitative_test.py", "qualitative_test.py"]
#: Modules a command must not have imported when it answers ``--help`` or refuses its arguments.
HEAVY = ("torch", "torchvision")

#: Commands whose light start still needs a change elsewhere; remove an entry once its change is in.
PENDING: dict[str, str] = {}

WRAPPER = r"""
import contextlib, io, json, os, runpy, sys
out, kind, target, arg_sets = sys.argv[1:]
reports = []
for args in json.loads(arg_sets):  # one interpreter: what the first run loads counts for the next
    sys.argv = [target, *args]
    stdout, stderr, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            if kind == "module":
                runpy.run_module(target, run_name="__main__", alter_sys=True)
            else:
                sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
                runpy.run_path(target, run_name="__main__")
        except SystemExit as exc:
            code = exc.code
    reports.append({"args": args, "exit": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue(),
                    "heavy": sorted(m for m in HEAVY if m in sys.modules)})
with open(out, "w") as f:
    json.dump(reports, f)
"""


def _params():
    for command in COMMANDS:
        marks = [pytest.mark.xfail(reason=PENDING[command], strict=True)] if command in PENDING else []
        yield pytest.param(command, marks=marks, id=command)


def run_command(command: str, arg_sets: list[list[str]], tmp_path) -> list[dict]:
    """Run ``command`` once per argument list, in one fresh interpreter; per run its exit status, output and the
    heavy modules imported so far."""
    kind = "script" if command.endswith(".py") else "module"
    target = os.path.join(ROOT, command) if kind == "script" else command
    out = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "codes"), ROOT])}
    proc = subprocess.run([sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{WRAPPER}", str(out), kind, target,
                           json.dumps(arg_sets)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.exists(), proc.stderr[-2000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("command", list(_params()))
def test_help_and_argument_errors_load_nothing_heavy(command, tmp_path):
    helped, refused = run_command(command, [["--help"], ["--no-such-option"]], tmp_path)
    assert helped["exit"] in (0, None) and "usage:" in helped["stdout"], helped["stderr"][-2000:]
    assert helped["heavy"] == [], f"{command} --help imported {helped['heavy']}"
    assert refused["exit"] == 2 and "error:" in refused["stderr"], refused
    assert refused["heavy"] == [], f"{command} with a bad argument imported {refused['heavy']}"


def test_enhance_refuses_missing_files_before_loading_torch(tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")  # only looked at for existence here
    missing_input, missing_model = run_command("sdsd.enhance", [
        [str(tmp_path / "nope.mp4"), "-o", str(tmp_path / "out.mp4"), "--model", str(video)],
        [str(video), "-o", str(tmp_path / "out.mp4"), "--model", str(tmp_path / "nope.pth")],
    ], tmp_path)
    assert missing_input["exit"] == 2 and "input not found" in missing_input["stderr"], missing_input
    assert missing_model["exit"] == 2 and "checkpoint not found" in missing_model["stderr"], missing_model
    assert missing_model["heavy"] == [], missing_model["heavy"]


def test_library_names_still_load_on_use():
    """The lazy package namespace ``sdsd.training`` still gives its names, loading them on first use; dcn gives
    torchvision's operator when asked for it."""
    code = ("import sys, sdsd.training as t; assert 'torch' not in sys.modules; "
            "assert callable(t.train) and callable(t.parse_args) and 'torch' in sys.modules; "
            "import dcn; assert 'torchvision' not in sys.modules; assert callable(dcn.ops.torchvision_deform_conv2d())")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "codes"), ROOT])}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
