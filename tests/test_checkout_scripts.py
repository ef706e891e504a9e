"""The root scripts run from a copy of the checkout that is not installed, and use that copy's code."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["train.py", "quantitative_test.py", "qualitative_test.py"]

# Loaded by Python at start-up (from PYTHONPATH) after the site-packages .pth files ran: removes the import hooks
# of an editable install (`pip install -e .`), so `sdsd` is importable only from sys.path, as in a fresh clone
# next to an environment that never installed it.
_NO_EDITABLE = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path_hooks[:] = [h for h in sys.path_hooks if "__editable__" not in getattr(h, "__module__", "")]
sys.path[:] = [p for p in sys.path if "__editable__" not in p]
"""


@pytest.fixture(scope="module")
def fresh_copy(tmp_path_factory):
    """The checkout's code and root scripts copied elsewhere, plus an environment that cannot see an install."""
    base = tmp_path_factory.mktemp("checkout")
    copy = base / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for folder in ("codes", "dcn", "options"):
        shutil.copytree(ROOT / folder, copy / folder, ignore=ignore)
    for script in [*SCRIPTS, "_sdsd_checkout.py"]:
        shutil.copy2(ROOT / script, copy / script)
    hooks = base / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(_NO_EDITABLE)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PYTHONPATH"] = str(hooks)
    env["PYTHONNOUSERSITE"] = "1"
    return copy, env, base


def test_sdsd_is_not_importable_in_that_environment(fresh_copy):
    _, env, base = fresh_copy
    out = subprocess.run([sys.executable, "-c", "import sdsd"], cwd=base, env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "No module named 'sdsd'" in out.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_root_script_runs_from_an_uninstalled_copy(fresh_copy, script):
    copy, env, base = fresh_copy
    out = subprocess.run([sys.executable, str(copy / script), "--help"], cwd=base, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage:" in out.stdout and "-opt" in out.stdout


def test_root_scripts_use_their_own_checkout(fresh_copy):
    # Even where another copy is importable (here: this test run's PYTHONPATH), a script uses the code beside it.
    copy, _, base = fresh_copy
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "codes"), str(ROOT)])}
    # What `python SCRIPT` does (its folder first on sys.path, then run it), followed by a look at what it imported.
    code = ("import os, runpy, sys; sys.argv = sys.argv[1:]; sys.path[0] = os.path.dirname(sys.argv[0]); "
            "runpy.run_path(sys.argv[0], run_name='not_main'); "
            "import sdsd, dcn; print(sdsd.__file__); print(dcn.__file__)")
    out = subprocess.run([sys.executable, "-c", code, str(copy / "quantitative_test.py")], cwd=base, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [str(copy / "codes" / "sdsd" / "__init__.py"), str(copy / "dcn" / "__init__.py")]
