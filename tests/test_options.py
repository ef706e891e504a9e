"""Option files: the published files load, unknown keys and bad values fail with clear messages."""

import glob
import os
import subprocess
import sys

import pytest

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
    with pytest.raises(UserError, match="use_flip: expected true or false"):
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
    assert "| `testing_dir` |" in md and "| `pixel_criterion` | `cb` |" in md


def test_readme_options_reference_is_generated_from_the_schema():
    """`make docs` regenerates it; this fails when the schema and the README drift apart."""
    assert options.update_readme(os.path.join(ROOT, "README.md"), check=True), "run `make docs`"


def test_zero_padded_scene_ids_stay_strings():
    opt = options.load(os.path.join(ROOT, "options/test/test_smid.yml"), ["datasets.test.testing_dir=0013",
                                                                           "datasets.test.N_frames=5"])
    assert opt["datasets"]["test"]["testing_dir"] == "0013"
    opt = options.load(os.path.join(ROOT, "options/test/test_smid.yml"), ["datasets.test.testing_dir=0013,0009"])
    assert opt["datasets"]["test"]["testing_dir"] == "0013,0009"
