"""Option files: the published files load, unknown keys and bad values fail with clear messages, before any work.

Every value is checked once, when :func:`sdsd.options.load` reads the file (``train.py``, ``quantitative_test.py``,
``qualitative_test.py``, the demo): the tests here call it directly and through the real entry points in
subprocesses run where the data folders and the checkpoint do not exist, so the option error must come first.
"""

import glob
import os
import re
import subprocess
import sys

import pytest
import yaml

from sdsd import options
from sdsd.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PUBLISHED = sorted(glob.glob(os.path.join(ROOT, "options", "*", "*.yml")))


def test_published_files_are_shipped():
    names = {os.path.relpath(p, ROOT) for p in PUBLISHED}
    for name in ("train_in_sdsd", "train_out_sdsd", "train_smid"):
        assert f"options/train/{name}.yml" in names
    for name in ("test_in_sdsd", "test_out_sdsd", "test_smid"):
        assert f"options/test/{name}.yml" in names


@pytest.mark.parametrize("path", PUBLISHED, ids=os.path.basename)
def test_every_shipped_file_validates(path):
    opt = options.load(path)
    assert opt["network_G"]["which_model_G"] == "denoise_illumination_enhance"
    for block in opt["datasets"].values():
        assert block["dataroot_GT"].startswith("dataset/")


def test_published_values_and_coercion():
    opt = options.load(os.path.join(ROOT, "options/train/train_in_sdsd.yml"))
    assert opt["train"]["val_freq"] == 5000 and isinstance(opt["train"]["val_freq"], int)
    assert opt["logger"]["save_checkpoint_freq"] == 5000
    assert opt["train"]["lr_G"] == 4e-4
    assert opt["train"]["manual_seed"] == 2318
    assert opt["datasets"]["train"]["phase"] == "train"
    assert opt["datasets"]["train"]["testing_dir"].split(",")[0] == "pair13"
    assert opt["path"]["experiments_root"] == os.path.join("./", "experiments", "indoor-sdsd")
    test = options.load(os.path.join(ROOT, "options/test/test_in_sdsd.yml"))
    assert test["path"]["pretrain_model_G"] == "pretrain/indoor_G.pth"
    assert "niter" not in test["train"]


def test_overrides_parse_yaml_scalars():
    opt = options.load(os.path.join(ROOT, "options/train/train_smid.yml"),
                       ["train.niter=10", "train.lr_G=1e-3", "datasets.train.train_size=[64, 32]",
                        "path.pretrain_model_G=null", "network_G.nf=16"])
    assert opt["train"]["niter"] == 10
    assert opt["train"]["lr_G"] == 1e-3
    assert opt["datasets"]["train"]["train_size"] == [64, 32]
    assert opt["network_G"]["nf"] == 16


def write(tmp_path, text):
    path = tmp_path / "opt.yml"
    path.write_text(text)
    return str(path)


def test_unknown_key_names_file_key_and_closest(tmp_path):
    path = write(tmp_path, "name: x\ntrain:\n  niter: 5\n  lr_g: 1e-4\n")
    with pytest.raises(UserError, match=r"opt.yml: unknown option train.lr_g; did you mean 'lr_G'\?"):
        options.load(path)
    path = write(tmp_path, "name: x\ndatasets:\n  train:\n    dataroot_GT: a\n    dataroot_LQ: b\n    GTsize: 3\n")
    with pytest.raises(UserError, match="datasets.train.GTsize; did you mean 'GT_size'"):
        options.load(path)
    with pytest.raises(UserError, match="unknown option train.nitr"):
        options.load(write(tmp_path, "name: x\n"), ["train.nitr=3"])


def test_bad_values_and_syntax(tmp_path):
    with pytest.raises(UserError, match="line 4, column 1: YAML syntax error"):
        options.load(write(tmp_path, "name: x\ntrain:\n  niter: 5\n\tlr_G: 3\n"))
    with pytest.raises(UserError, match=r"opt.yml: datasets.train.use_flip is 3; allowed: true or false$"):
        options.load(write(tmp_path, "name: x\ndatasets:\n  train:\n    dataroot_GT: a\n    dataroot_LQ: b\n"
                                     "    use_flip: 3\n"))
    with pytest.raises(UserError, match="missing required option train.niter"):
        options.load(write(tmp_path, "name: x\ntrain:\n  lr_G: 1.0\n"))
    with pytest.raises(UserError, match="option file not found"):
        options.load(str(tmp_path / "missing.yml"))
    with pytest.raises(UserError, match="expected key.path=value"):
        options.load(write(tmp_path, "name: x\n"), ["train.niter"])


def test_cli_check_and_markdown_reference():
    ok = subprocess.run([sys.executable, "-m", "sdsd.options", "--check", "options/test/test_smid.yml"],
                        cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0 and '"smid-results"' in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "sdsd.options", "--check", "options/test/test_smid.yml",
                          "--set", "network_G.groupz=2"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "network_G.groupz" in bad.stderr
    md = options.markdown_reference()
    assert "| `testing_dir` |" in md and "| `pixel_criterion` | `cb` | cb, charbonnier, l1 |" in md
    assert "| `channel` | `rgb` | rgb, y |" in md and "| `network_G.predeblur` | `true` | anything |" in md


def test_readme_options_reference_is_generated_from_the_schema():
    """`make docs` regenerates it; this fails when the schema and the README drift apart."""
    assert options.update_readme(os.path.join(ROOT, "README.md"), check=True), "run `make docs`"


def test_zero_padded_scene_ids_stay_strings():
    opt = options.load(os.path.join(ROOT, "options/test/test_smid.yml"), ["datasets.test.testing_dir=0013",
                                                                           "datasets.test.N_frames=5"])
    assert opt["datasets"]["test"]["testing_dir"] == "0013"
    opt = options.load(os.path.join(ROOT, "options/test/test_smid.yml"), ["datasets.test.testing_dir=0013,0009"])
    assert opt["datasets"]["test"]["testing_dir"] == "0013,0009"


# -- values: one line naming the file, the key, the value and what is allowed ----------------------------------------

TEST_FILE = os.path.join(ROOT, "options/test/test_in_sdsd.yml")
TRAIN_FILE = os.path.join(ROOT, "options/train/train_in_sdsd.yml")

BAD_VALUES = [
    ("protocol.channel=Y", "protocol.channel is 'Y'; allowed: rgb, y"),
    ("protocol.average=frames", "protocol.average is 'frames'; allowed: scene, frame"),
    ("protocol.gt_mean=1", "protocol.gt_mean is 1; allowed: true, false, bt601 or retinexformer"),
    ("protocol.preset=snr_aware", "protocol.preset is 'snr_aware'; allowed: sdsd, snr-aware, retinexformer"),
    ("protocol.psnr=double", "protocol.psnr is 'double'; allowed: uint8, float"),
    ("protocol.ssim=0", "protocol.ssim is 0; allowed: true or false"),
    ("gpu_ids=banana", "gpu_ids is 'banana'; allowed: a list of integers >= 0, or null"),
    ("gpu_ids=[0, -1]", "gpu_ids is [0, -1]; allowed: a list of integers >= 0"),
    ("conv_backend=fast", "conv_backend is 'fast'; allowed: auto, winograd, channels_last, nchw"),
    ("datasets.test.padding=zero", "datasets.test.padding is 'zero'; allowed: new_info, replicate, reflection"),
    ("datasets.test.N_frames=4", "datasets.test.N_frames is 4; allowed: an odd integer >= 1"),
    ("datasets.test.train_size=[960]", "datasets.test.train_size is [960]; allowed: [W, H]"),
    ("datasets.test.split=moving", "datasets.test.split is 'moving'; allowed: dynamic, static"),
    ("datasets.test.mode=video", "datasets.test.mode is 'video'; allowed: SDSD, SMID"),
    ("datasets.test.n_workers=-1", "datasets.test.n_workers is -1; allowed: an integer >= 0"),
    ("datasets.test.testing_dir=3.5", "datasets.test.testing_dir is 3.5; allowed: comma-separated scene names"),
    ("network_G.nf=0", "network_G.nf is 0; allowed: an integer >= 1"),
    ("network_G.which_model_G=edvr", "network_G.which_model_G is 'edvr'; allowed: SDSDNet, denoise_illumination"),
    ("network_G.w_TSA=yes please", "network_G.w_TSA is 'yes please'; allowed: true or false"),
    ("path.pretrain_model_G=[a]", "path.pretrain_model_G is ['a']; allowed: a path, or null"),
    ("scale=4", "scale is 4; allowed: 1"),
    ("train.amp=fp8", "train.amp is 'fp8'; allowed: fp32, bf16, fp16 (none = fp32)"),
    ("train.lr_G=-1", "train.lr_G is -1; allowed: a number >= 0"),
    ("train.beta1=1", "train.beta1 is 1; allowed: a number >= 0 and < 1"),
    ("train.nan_policy=ignore", "train.nan_policy is 'ignore'; allowed: stop, skip"),
    ("logger.print_freq=0", "logger.print_freq is 0; allowed: an integer >= 1"),
    ("train.val_freq=2.5", "train.val_freq is 2.5; allowed: an integer >= 1"),
]


@pytest.mark.parametrize("override, message", BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_bad_value_names_file_key_value_and_allowed(override, message):
    with pytest.raises(UserError) as err:
        options.load(TEST_FILE, [override])
    text = str(err.value)
    assert text.startswith(f"{TEST_FILE}: ") and "\n" not in text
    assert message in text, text


CROSS_KEY = [
    # every entry point (file, overrides, message)
    (TEST_FILE, "datasets.test.N_frames=3", "datasets.test.N_frames is 3 but network_G.nframes is 5"),
    (TEST_FILE, "network_G.center=5", r"network_G.center is 5; allowed: an index below network_G.nframes \(5\)"),
    (TEST_FILE, "network_G.nf=60", "network_G.nf is 60 but the 8 network_G.groups must divide it"),
    (TRAIN_FILE, "train.channels_last=true conv_backend=nchw",
     "train.channels_last is true but conv_backend is 'nchw'; train.channels_last is the old name"),
]
TRAINING_ONLY = [
    ("datasets.train.batch_size=31", "datasets.train.batch_size 31 is the global batch and must be divisible by the "
                                     "2 processes"),
    ("train.restarts=[3]", "train.restart_weights has 4 entries for 1 train.restarts"),
    ("train.T_period=[50000]", r"train.T_period is \[50000\] but 4 train.restarts need 5 periods"),
    ("datasets.train.GT_size=100", "datasets.train.GT_size 100 must be a multiple of 16"),
    ("datasets.train.GT_size=1024", r"datasets.train.GT_size 1024 is larger than the frames \(960x512"),
    ("network_G.w_TSA=false", "train.ft_tsa_only=50000 needs network_G.w_TSA: true"),
    ("train.noisy_copy=false", "train.noisy_copy is false but train.noise_weight is 1.0: the noise term is computed "
                               "on the noisy copy"),
]


@pytest.mark.parametrize("path, overrides, message", CROSS_KEY, ids=[o for _, o, _ in CROSS_KEY])
def test_rules_between_keys_run_at_load(path, overrides, message):
    with pytest.raises(UserError, match=f"^{re.escape(path)}: {message}"):
        options.load(path, overrides.split())


@pytest.mark.parametrize("overrides, message", TRAINING_ONLY, ids=[o for o, _ in TRAINING_ONLY])
def test_training_rules_run_at_load_for_training(monkeypatch, overrides, message):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match=f"^{re.escape(TRAIN_FILE)}: {message}"):
        options.load(TRAIN_FILE, overrides.split(), is_train=True)
    options.load(TRAIN_FILE, overrides.split())  # not training: the same file loads (e.g. to evaluate)


def test_training_needs_a_train_section_and_block():
    with pytest.raises(UserError, match="test_in_sdsd.yml: the option file has no `train` section"):
        options.load(TEST_FILE, is_train=True)
    with pytest.raises(UserError, match="test_in_sdsd.yml: the option file has no datasets.train block"):
        options.load(TEST_FILE, ["train.niter=5", "train.T_period=[5]"], is_train=True)
    with pytest.raises(UserError, match="the option file has no `train` section"):
        options.check_training(options.load(TEST_FILE), world_size=1)


def test_world_size_comes_from_torchrun(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(UserError, match="batch_size 32 is the global batch and must be divisible by the 3 processes"):
        options.load(TRAIN_FILE, is_train=True)
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert options.load(TRAIN_FILE, is_train=True)["datasets"]["train"]["batch_size"] == 32


def test_coercion_keeps_what_yaml_meant():
    opt = options.load(TRAIN_FILE, ["train.lr_G=1e-4", "train.niter=6e5", "train.eta_min=0", "network_G.nf=64.0"])
    assert opt["train"]["lr_G"] == 1e-4 and isinstance(opt["train"]["lr_G"], float)
    assert opt["train"]["niter"] == 600000 and isinstance(opt["train"]["niter"], int)
    assert opt["train"]["eta_min"] == 0.0 and isinstance(opt["train"]["eta_min"], float)
    assert opt["network_G"]["nf"] == 64 and isinstance(opt["network_G"]["nf"], int)
    assert opt["gpu_ids"] == [0] and options.load(TEST_FILE, ["gpu_ids=null"])["gpu_ids"] is None
    assert options.load(TEST_FILE, ["datasets.test.testing_dir=[pair13, pair15]"])["datasets"]["test"][
        "testing_dir"] == ["pair13", "pair15"]


# -- legacy keys, program keys, the one memory-format switch ---------------------------------------------------------


def test_legacy_keys_are_accepted_and_dropped(tmp_path):
    text = open(TRAIN_FILE).read() + "is_train: false\ndist: true\nsuffix: _x\ncrop_border: 4\n"
    path = write(tmp_path, text)
    opt = options.load(path, is_train=True)
    assert opt["is_train"] is True and opt["dist"] is False  # the program's, not the file's
    for key in ("model", "distortion", "scale", "suffix", "crop_border"):
        assert key not in opt
    for key in ("interval_list", "random_reverse", "border_mode", "cache_keys", "LQ_size", "color"):
        assert key not in opt["datasets"]["train"]
    assert "predeblur" not in opt["network_G"] and "HR_in" not in opt["network_G"]
    assert options.load(TEST_FILE)["is_train"] is False


def test_no_published_file_sets_program_keys():
    import yaml

    for path in PUBLISHED:
        with open(path) as f:
            raw = yaml.safe_load(f)
        assert not {"is_train", "dist"} & set(raw), path


def test_channels_last_is_a_legacy_alias_of_conv_backend():
    assert options.load(TRAIN_FILE)["conv_backend"] == "auto"
    assert options.load(TRAIN_FILE, ["train.channels_last=true"])["conv_backend"] == "channels_last"
    assert "channels_last" not in options.load(TRAIN_FILE, ["train.channels_last=true"])["train"]
    assert options.load(TRAIN_FILE, ["train.channels_last=true", "conv_backend=channels_last"])[
        "conv_backend"] == "channels_last"
    assert options.load(TRAIN_FILE, ["train.channels_last=false", "conv_backend=nchw"])["conv_backend"] == "nchw"
    with pytest.raises(UserError, match="train.channels_last is false but conv_backend is 'channels_last'"):
        options.load(TRAIN_FILE, ["train.channels_last=false", "conv_backend=channels_last"])
    with pytest.raises(UserError, match="train.channels_last is 'maybe'; allowed: true or false"):
        options.load(TRAIN_FILE, ["train.channels_last=maybe"])


@pytest.mark.parametrize("overrides, backend", [
    ([], "auto"), (["conv_backend=winograd"], "winograd"), (["conv_backend=channels_last"], "channels_last"),
    (["train.channels_last=true"], "channels_last"), (["conv_backend=nchw"], "nchw"),
])
def test_conv_backend_is_the_one_memory_format_switch_in_training(overrides, backend):
    import torch

    from sdsd.archs.fastconv import WinogradConv2d, nnpack_available
    from sdsd.training import build_training
    from sdsd.utils.dist import DistInfo

    tiny = ["network_G.nf=16", "network_G.groups=2", "network_G.front_RBs=1", "network_G.back_RBs=1"]
    opt = options.load(TRAIN_FILE, tiny + overrides)
    state = build_training(opt, DistInfo())
    if backend in ("auto", "winograd"):  # as at test time: winograd on a CPU with NNPACK, else channels_last
        backend = "winograd" if nnpack_available() else "channels_last"
    winograd = any(isinstance(m, WinogradConv2d) for m in state.model.modules())
    nhwc = state.model.fea_L2_conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert (winograd, nhwc, state.channels_last) == (backend == "winograd", backend == "channels_last",
                                                     backend == "channels_last")


def test_published_network_is_the_schema_default_and_the_constructor_default():
    from sdsd.archs.sdsd_arch import DenoiseIlluminationEnhance

    net = options.published_network()
    assert net == {"which_model_G": "denoise_illumination_enhance", "nf": 64, "nframes": 5, "groups": 8,
                   "front_RBs": 5, "back_RBs": 10, "w_TSA": True}
    for path in PUBLISHED:
        if "demo" not in path:
            block = options.load(path)["network_G"]
            assert {k: block[k] for k in net} == net, path
    import inspect

    params = inspect.signature(DenoiseIlluminationEnhance).parameters
    assert {k: params[k].default for k in net if k != "which_model_G"} == {k: v for k, v in net.items()
                                                                          if k != "which_model_G"}
    assert "predeblur" not in params and "HR_in" not in params


def test_build_network_drops_legacy_keys():
    import sdsd

    block = {"which_model_G": "denoise_illumination_enhance", "nf": 8, "groups": 2, "front_RBs": 1, "back_RBs": 1,
             "predeblur": True, "HR_in": True}
    assert sdsd.build_network(block).nf == 8
    with pytest.raises(UserError, match="network_G.HR_inn"):
        sdsd.build_network({**block, "HR_inn": True})


def test_precision_modes_are_one_list():
    import torch

    from sdsd.options.schema import TRAIN_KEYS
    from sdsd.runtimes.registry import PRECISIONS
    from sdsd.utils import precision

    # One vocabulary: training's amp, the runtimes and sdsd.enhance --precision; `none` is the older fp32.
    assert precision.MODES == PRECISIONS == ("fp32", "bf16", "fp16")
    assert TRAIN_KEYS["amp"].check.allowed == "fp32, bf16, fp16 (none = fp32)"
    assert TRAIN_KEYS["amp"].check("none") == "fp32" and TRAIN_KEYS["amp"].default == "fp32"
    assert precision.dtype("none") is None and precision.dtype(None) is None and precision.dtype("fp32") is None
    assert precision.dtype("bf16") is torch.bfloat16 and precision.dtype("fp16") is torch.float16
    with pytest.raises(ValueError):
        precision.dtype("fp8")
    with precision.autocast("cpu", "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with precision.autocast(torch.device("cpu"), "none"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_check_protocol_returns_the_validated_protocol():
    from sdsd.evaluation.common import check_protocol

    published = {"preset": "sdsd", "psnr": "uint8", "ssim": True}  # the keys the presets added, as published
    opt = options.load(TEST_FILE, ["protocol.channel=y"])
    assert check_protocol(opt) == {"average": "scene", "channel": "y", "gt_mean": False, "self_ensemble": False,
                                   "exposure": "off", **published}
    assert check_protocol(opt, self_ensemble=True)["self_ensemble"] is True
    assert check_protocol({}) == {"average": "scene", "channel": "rgb", "gt_mean": False, "self_ensemble": False,
                                  "exposure": "off", **published}
    # gt_mean: true (the older spelling) is the preset's rule: bt601 by default, Retinexformer's under its preset.
    assert check_protocol({"protocol": {"gt_mean": True}})["gt_mean"] == "bt601"
    assert check_protocol(options.load(TEST_FILE, ["protocol.gt_mean=true"]))["gt_mean"] == "bt601"
    opt = options.load(TEST_FILE, ["protocol.gt_mean=true", "protocol.preset=retinexformer"])
    assert check_protocol(opt)["gt_mean"] == "retinexformer"


# -- the entry points: the option error comes first, as one line with exit status 2 ---------------------------------


def run_entry(script, option_file, overrides, cwd, env=None):
    """Run ``python <script> -opt FILE --set ...`` in ``cwd`` (no data, no checkpoint there)."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, script), "-opt", option_file, "--set", *overrides],
                          cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300)
    return proc


ENTRY_CASES = [
    ("train.py", TRAIN_FILE, ["protocol.channel=Y"], "protocol.channel is 'Y'; allowed: rgb, y", None),
    ("train.py", TRAIN_FILE, ["protocol.average=frames"], "protocol.average is 'frames'; allowed: scene, frame", None),
    ("train.py", TRAIN_FILE, ["gpu_ids=banana"], "gpu_ids is 'banana'; allowed: a list of integers", None),
    ("train.py", TRAIN_FILE, ["train.T_period=[50000]"], "train.T_period is [50000] but 4 train.restarts", None),
    ("train.py", TRAIN_FILE, ["datasets.train.batch_size=33"], "datasets.train.batch_size 33 is the global batch "
                                                               "and must be divisible by the 2 processes",
     {"WORLD_SIZE": "2"}),
    ("train.py", TRAIN_FILE, ["network_G.w_TSA=false"], "train.ft_tsa_only=50000 needs network_G.w_TSA: true", None),
    ("quantitative_test.py", TEST_FILE, ["protocol.channel=Y"], "protocol.channel is 'Y'; allowed: rgb, y", None),
    ("quantitative_test.py", TEST_FILE, ["protocol.average=frames"], "protocol.average is 'frames'; allowed: scene",
     None),
    ("quantitative_test.py", TEST_FILE, ["gpu_ids=banana"], "gpu_ids is 'banana'; allowed: a list of integers",
     None),
    ("quantitative_test.py", TEST_FILE, ["datasets.test.N_frames=3"], "datasets.test.N_frames is 3 but "
                                                                      "network_G.nframes is 5", None),
    ("qualitative_test.py", TEST_FILE, ["protocol.channel=Y"], "protocol.channel is 'Y'; allowed: rgb, y", None),
]


@pytest.mark.parametrize("script, option_file, overrides, message, env", ENTRY_CASES,
                         ids=[f"{c[0]}-{c[2][0]}" for c in ENTRY_CASES])
def test_entry_points_reject_bad_values_before_any_work(tmp_path, script, option_file, overrides, message, env):
    proc = run_entry(script, option_file, overrides, tmp_path, env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {option_file}: {message}"), proc.stderr
    # The data folders and the checkpoint the files name do not exist here, and nothing was written: the options
    # were checked before any of them was looked at.
    assert not os.path.exists(tmp_path / "dataset") and os.listdir(tmp_path) == []


@pytest.mark.parametrize("key, value, message", [
    ("protocol", {"channel": "Y"}, "protocol.channel is 'Y'; allowed: rgb, y"),
    ("protocol", {"average": "frames"}, "protocol.average is 'frames'; allowed: scene, frame"),
    ("gpu_ids", "banana", "gpu_ids is 'banana'; allowed: a list of integers"),
], ids=["channel", "average", "gpu_ids"])
def test_enhance_opt_rejects_bad_values_before_any_work(tmp_path, key, value, message):
    """``sdsd.enhance --opt FILE`` validates the whole file first: the input, model and output do not exist."""
    work = tmp_path / "work"
    work.mkdir()
    option_file = tmp_path / "bad.yml"
    option_file.write_text(yaml.safe_dump({"network_G": {"nf": 8}, key: value}))
    proc = subprocess.run([sys.executable, "-m", "sdsd.enhance", "missing.mp4", "-o", "out.mp4", "--model",
                           "missing_G.pth", "--opt", str(option_file)], cwd=work, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {option_file}: {message}"), proc.stderr
    assert os.listdir(work) == []
