"""Every command in the README's ```bash blocks runs, as written, with tiny overrides appended.

The README's ```sh blocks are the ones that need hardware a test machine lacks (several machines); everything
in ```bash blocks is run here: in a scratch folder holding tiny data, a tiny checkpoint under the published name
and the repository's option files, with ``--set`` overrides that shrink the network, the data paths and the
iteration counts. A command this file does not know how to shrink fails the test, so the README cannot grow an
untested command.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

import av
import numpy as np
import pytest
from evaluation_helpers import TINY_NET, darken, make_sdsd_tree, save_tiny_checkpoint, write_frames

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NET = [f"network_G.{k}={v}" for k, v in TINY_NET.items()]


def readme_commands() -> list[str]:
    """The commands of the README's ```bash blocks, continuation lines joined, comments dropped."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                commands.append(" ".join(line.split()))
    return commands


COMMANDS = readme_commands()


def data_overrides(phases, testing_dir="sceneA,sceneB"):
    out = []
    for phase in phases:
        out += [f"datasets.{phase}.dataroot_GT=data/GT", f"datasets.{phase}.dataroot_LQ=data/input",
                f"datasets.{phase}.testing_dir={testing_dir}", f"datasets.{phase}.train_size=null"]
    return out


TRAIN_SET = data_overrides(("train", "val")) + NET + [
    "train.niter=1", "train.val_freq=1", "train.ft_tsa_only=0", "logger.save_checkpoint_freq=1",
    "datasets.train.batch_size=2", "datasets.train.GT_size=32", "datasets.train.n_workers=0",
    "datasets.val.max_frames=2"]
TEST_SET = NET + ["datasets.test.dataroot_GT=data/GT", "datasets.test.dataroot_LQ=data/input",
                  "datasets.test.train_size=null", "datasets.test.testing_dir=sceneA,sceneB"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A scratch checkout-like folder: options/, tiny data, pretrain/<name>_G.pth, a dark video, a PNG release."""
    work = tmp_path_factory.mktemp("readme")
    os.symlink(os.path.join(ROOT, "options"), work / "options")
    make_sdsd_tree(str(work / "data"))
    os.makedirs(work / "pretrain")
    for name in ("indoor", "outdoor", "smid"):
        save_tiny_checkpoint(str(work / "pretrain" / f"{name}_G.pth"))
    os.makedirs(work / "experiments" / "demo" / "models")
    save_tiny_checkpoint(str(work / "experiments" / "demo" / "models" / "latest_G.pth"))  # a demo run's weights
    # SMID layout: one reference image per scene folder, the low-light frames in another root.
    for scene in ("0013", "0001"):
        frames = [np.load(work / "data" / "GT" / "sceneA" / f"{k:04d}.npy") for k in range(6)]
        write_frames(str(work / "dataset" / "smid" / "SMID_Long_np" / scene), frames[:1], ["0000.npy"])
        low = [darken(f, k) for k, f in enumerate(frames)]
        write_frames(str(work / "dataset" / "smid" / "SMID_LQ_np" / scene), low)
    # A PNG release tree for prepare_sdsd, and a short dark video for sdsd.enhance.
    import cv2

    for k in range(2):
        folder = work / "dataset" / "indoor_png" / "GT" / "pair1"
        os.makedirs(folder, exist_ok=True)
        cv2.imwrite(str(folder / f"{k:04d}.png"), np.load(work / "data" / "GT" / "sceneA" / f"{k:04d}.npy"))
    with av.open(str(work / "dark.mp4"), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        for k in range(6):
            rgb = darken(np.load(work / "data" / "GT" / "sceneB" / f"{k:04d}.npy"), k)[..., ::-1]
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    # An archive of short videos for the whole-archive commands, and a list of them.
    os.makedirs(work / "clips")
    for name in ("a.mp4", "b.mp4"):
        shutil.copy(work / "dark.mp4", work / "clips" / name)
    (work / "list.txt").write_text("clips/a.mp4\nclips/b.mp4\n")
    return work


def shrink(command: str) -> list[str] | None:
    """The README command as argv, with tiny overrides appended; ``None`` for commands not run here."""
    argv = shlex.split(command)
    if argv[0] == "make":
        return None  # `make test` is this suite; `make demo` runs in test_demo.py; checked against the Makefile
    argv = [sys.executable if a == "python" else a for a in argv]
    if argv[0] == "torchrun":
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", *argv[1:]]
    script = next((a for a in argv if a.endswith(".py")), None)
    if script == "train.py":
        argv[argv.index(script)] = os.path.join(ROOT, script)
        return argv + ["--set", *TRAIN_SET, f"name=readme{abs(hash(command)) % 10**6}"]
    if script in ("quantitative_test.py", "qualitative_test.py"):
        argv[argv.index(script)] = os.path.join(ROOT, script)
        static = "_static" in command
        smid = "smid" in command
        sets = NET + ["datasets.test.train_size=null", "datasets.test.testing_dir=0013"] if smid else TEST_SET
        if static:
            sets = sets[:-1] + ["datasets.test.testing_dir=sceneA", "datasets.test.split=static"]
        extra = ["--no-progress"] + (["--no-video"] if script == "qualitative_test.py" else [])
        return argv + extra + ["--set", *sets]
    if "sdsd.enhance" in argv:  # one process, or shared out under torchrun
        return argv + ["--quiet"]
    if argv[1:3] == ["-m", "sdsd.tools.synthesize"]:
        return argv + ["--size", "32", "48", "--frames", "6", "--scenes", "3", "--test-scenes", "1"]
    if argv[1:3] in (["-m", "sdsd.tools.prepare_sdsd"], ["-m", "sdsd.tools.make_lmdb"]):
        return argv + (["--size", "32", "48"] if "prepare_sdsd" in command else [])
    if argv[1:3] == ["-m", "sdsd.tools.figures"]:
        return argv
    if argv[1:3] == ["-m", "sdsd.tools.temporal"]:
        return argv
    if argv[1:3] == ["-m", "sdsd.tools.sidecar"]:
        return argv + ["--set", *data_overrides(("train", "val")), "datasets.train.GT_size=32"]
    raise AssertionError(f"README command not covered by tests/test_readme.py: {command}")


def test_readme_has_the_commands_this_file_checks():
    assert "make demo" in COMMANDS and "make test" in COMMANDS
    assert any(c.startswith("python train.py") for c in COMMANDS)
    assert any("torch.distributed.launch" in c for c in COMMANDS)
    assert any(c.startswith("python -m sdsd.enhance") for c in COMMANDS)
    makefile = open(os.path.join(ROOT, "Makefile"), encoding="utf-8").read()
    for command in COMMANDS:
        if command.startswith("make "):
            assert re.search(rf"^{command.split()[1]}:", makefile, flags=re.M), command


#: README commands that read what another README command writes:
#: {part of the command: (the command that writes it, what it writes)}.
PREREQUISITES = {
    "--predictions results/indoor-sdsd-results": (
        "python qualitative_test.py -opt options/test/test_in_sdsd.yml", "results/indoor-sdsd-results"),
    "sdsd.tools.temporal bright.mp4": ("python -m sdsd.enhance dark.mp4 -o bright.mp4 --model indoor", "bright.mp4"),
}


def _multi_process(command: str) -> bool:
    return command.startswith("torchrun") or "torch.distributed" in command


# The multi-process commands (torchrun, the legacy launcher) run in `make soak`; the others in `make test`.
@pytest.mark.parametrize("command", [pytest.param(c, marks=pytest.mark.soak) if _multi_process(c) else c
                                     for c in COMMANDS])
def test_readme_command_runs(command, workdir):
    argv = shrink(command)
    if argv is None:
        pytest.skip("make targets are exercised elsewhere")
    if "figures" in command:
        # The curve command reads a training run's TensorBoard events: write a real one under tb_logger/demo.
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(workdir / "tb_logger" / "demo")) as writer:
            for step in range(1, 4):
                writer.add_scalar("loss/total", 10.0 / step, step)
                writer.add_scalar("val/psnr", 20.0 + step, step)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for needed, (first, writes) in PREREQUISITES.items():  # a command that reads what another one writes
        if needed in command and not os.path.exists(workdir / writes):
            done = subprocess.run(shrink(first), cwd=workdir, capture_output=True, text=True, env=env, timeout=300)
            assert done.returncode == 0, f"{first}\n{done.stderr[-3000:]}"
    done = subprocess.run(argv, cwd=workdir, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    if "sdsd.tools.sidecar" in command:
        from sdsd.exposure import read_sidecar

        stats = read_sidecar(str(workdir / "experiments" / "demo" / "models" / "latest_G.pth"))
        assert stats["version"] == 2 and 0 < stats["input"]["smoothed_percentiles_linear"]["99"][0] < 1
