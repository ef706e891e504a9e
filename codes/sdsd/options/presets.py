"""Protocol presets: one name per paper that sets every choice behind its SDSD and SMID numbers.

``protocol.preset`` (``--protocol`` on ``quantitative_test.py`` and ``qualitative_test.py``) names one of
:data:`PRESETS`. When the options are loaded (:func:`sdsd.options.validate`), each setting of the preset fills the
key it belongs to wherever the option file (with its ``--set`` overrides) does not give that key; a key that is
given explicitly always wins. The settings:

* ``protocol`` section: ``average``, ``channel``, ``psnr``, ``ssim``, ``gt_mean``; and the rule that
  ``gt_mean: true`` stands for (:attr:`Preset.gt_mean_rule`).
* every SDSD dataset block: ``split`` (it decides which folders are held out, so training and evaluation agree;
  SMID test scenes are matched by exact name in both papers, so SMID blocks keep the file's split);
* evaluation blocks (every phase not named ``train*``): ``test_frames`` and, per dataset family, ``train_size``
  (the resize).

``protocol.temporal`` (warping error and flicker, :mod:`sdsd.metrics.temporal`) is not a preset setting: no paper
above reports them, every preset leaves them off and any preset may turn them on.

The default preset, ``sdsd``, holds exactly the schema defaults and sets no resize, so files that do not name a
preset load as before. The metrics JSON of ``quantitative_test.py`` records the preset, every resolved setting and
which of them differ from the preset (:func:`settings`).

What each paper's released code does (read from the two public repositories; the statements below are ours):

SDSD-Net (ICCV 2021, this project's reference; ``sdsd``)
    Dynamic split: ``testing_dir`` lists the test scenes. First 30 frames of each test scene, windows computed
    within those 30. Every frame rounded to uint8, PSNR in float64 over the RGB channels, MATLAB-style SSIM on the
    uint8 images, no border crop, no Y channel, no GT-mean; the mean over scenes of per-scene means. The published
    option files resize to 960x512 (``train_size``), which this preset leaves to the option file.

SNR-Aware (CVPR 2022, repository dvlab-research/SNR-Aware-Low-Light-Enhance; ``snr-aware``)
    * Data: the static version of SDSD (``indoor_static_np``, ``outdoor_static_np``). Its SDSD test dataset
      (``data/dataset_SDSD_test.py``) walks the sorted GT and LQ folders in pairs and takes a folder when its name,
      or the part of its name before the first ``_2``, is in ``testing_dir``: each ``<scene>_2`` twin is a folder
      of its own next to ``<scene>`` (``split: static``).
    * Frames: the first 30 sorted files of each test folder, LQ and GT alike; the frame window of a centre frame
      is built within those 30 (``test_frames: 30``).
    * Resize: its SDSD test files (``options/test/SDSD_*.yml``) give ``train_size: [960, 512]``, applied to the
      decoded uint8 array with OpenCV's default (bilinear) resize in ``data/util.py``; its SMID test file gives
      none, so SMID frames are scored at their stored size.
    * Scores (``test.py`` with ``utils/util.py``): output and GT are clamped to [0, 1], scaled by 255 and rounded
      to uint8; PSNR is ``20 log10(255 / rmse)`` in float64 over all three channels, no crop, no Y, no GT-mean
      (``psnr: uint8``, ``channel: rgb``, ``gt_mean: false``). The SSIM call is commented out and 0 is stored in
      its place: the preset switches SSIM off (``ssim: false``, recorded as null, not 0); ``protocol.ssim: true``
      gives the uint8 SSIM that line would compute.
    * Average: the logged result is the mean over folders of the per-folder means, the ``_2`` twins counted as
      folders (``average: scene``); the script also prints the mean over all frames (``average: frame``). When
      every test folder has at least 30 frames the two are the same number.
    * SMID (``data/dataset_SMID_test.py``): the scenes of its test list, the first 30 LQ frames of each, and as
      GT the first file of the scene's GT folder whose path contains neither ``.ARW`` nor ``half``.

Retinexformer (ICCV 2023, repository caiyuanhao1998/Retinexformer; ``retinexformer``)
    * Data and test folders: the static SDSD data and the same ``_2`` rule (``basicsr/data/SDSD_image_dataset.py``).
    * Frames: every frame of each test folder, no cap (``test_frames: null``); SMID
      (``basicsr/data/SMID_image_dataset.py``): every LQ frame of each test scene, GT chosen as in SNR-Aware.
      Retinexformer enhances single frames; for SDSD-Net the windows are built within the whole folder.
    * Resize: the validation blocks of ``Options/RetinexFormer_SDSD_indoor.yml``, ``..._SDSD_outdoor.yml`` and
      ``..._SMID.yml`` give ``train_size: [960, 512]``, applied as in SNR-Aware (uint8 array, bilinear).
    * PSNR (``Enhancement/test_from_dataset.py`` with ``Enhancement/utils.py``): on the float32 RGB arrays in
      [0, 1], the output clamped but not rounded: ``10 log10(1 / mse)`` with numpy's float32 mean of the squared
      difference, 100 for identical frames (``psnr: float``).
    * SSIM: on ``skimage.img_as_ubyte`` of both frames (x255, rounded half to even: the same uint8 images as
      ours), MATLAB-style SSIM per channel, averaged: the same value as this project's SSIM up to the rounding of
      the filter implementation (below 1e-9).
    * Average: the plain mean over every frame of every folder (``average: frame``).
    * GT-mean: off for SDSD and SMID (the repository's README adds ``--GT_mean`` only to its LOL commands). When
      switched on (``gt_mean: true`` under this preset, or ``gt_mean: retinexformer``), each frame's mean
      brightness is OpenCV's ``COLOR_BGR2GRAY`` of the RGB arrays, so red is weighted 0.114 and blue 0.299 (the
      BT.601 weights swapped); the clamped output is multiplied by ``mean_gt / mean_output`` and clamped again
      (:func:`sdsd.metrics.gt_mean_scale_retinexformer`).
"""

from __future__ import annotations

import copy
import dataclasses

__all__ = ["Preset", "PRESETS", "PRESET_NAMES", "DEFAULT_PRESET", "PROTOCOL_SETTINGS", "DATASET_SETTINGS",
           "apply_preset", "settings", "dataset_family"]


@dataclasses.dataclass(frozen=True)
class Preset:
    """One paper's reporting protocol.

    Attributes:
        name: the ``protocol.preset`` value.
        paper: the paper, for tables and messages.
        protocol: values of the ``protocol`` keys (``average``, ``channel``, ``psnr``, ``ssim``, ``gt_mean``).
        gt_mean_rule: the rule ``gt_mean: true`` stands for under this preset.
        split: ``datasets.<phase>.split`` of every SDSD block.
        test_frames: ``datasets.<phase>.test_frames`` of evaluation blocks (``None`` = every frame).
        resize: ``train_size`` of evaluation blocks per dataset family (``SDSD``, ``SMID``); a family not listed
            keeps what the option file says.
        reproduces: which published numbers the preset reproduces.
    """

    name: str
    paper: str
    protocol: dict
    gt_mean_rule: str
    split: str
    test_frames: int | None
    resize: dict
    reproduces: str


_SIZE = [960, 512]

PRESETS = {
    "sdsd": Preset(
        name="sdsd", paper="SDSD-Net (ICCV 2021)",
        protocol={"average": "scene", "channel": "rgb", "psnr": "uint8", "ssim": True, "gt_mean": False},
        gt_mean_rule="bt601", split="dynamic", test_frames=30, resize={},
        reproduces="SDSD-Net's SDSD (dynamic) and SMID results; the published option files of this project"),
    "snr-aware": Preset(
        name="snr-aware", paper="SNR-Aware (CVPR 2022)",
        protocol={"average": "scene", "channel": "rgb", "psnr": "uint8", "ssim": False, "gt_mean": False},
        gt_mean_rule="bt601", split="static", test_frames=30, resize={"SDSD": _SIZE, "SMID": None},
        reproduces="SNR-Aware's SDSD-indoor, SDSD-outdoor and SMID PSNR (its test script computes no SSIM)"),
    "retinexformer": Preset(
        name="retinexformer", paper="Retinexformer (ICCV 2023)",
        protocol={"average": "frame", "channel": "rgb", "psnr": "float", "ssim": True, "gt_mean": False},
        gt_mean_rule="retinexformer", split="static", test_frames=None, resize={"SDSD": _SIZE, "SMID": _SIZE},
        reproduces="Retinexformer's SDSD-in, SDSD-out and SMID PSNR/SSIM (without GT-mean, as published)"),
}

PRESET_NAMES = tuple(PRESETS)
DEFAULT_PRESET = "sdsd"
#: The ``protocol`` keys a preset sets.
PROTOCOL_SETTINGS = ("average", "channel", "psnr", "ssim", "gt_mean")
#: The dataset keys a preset sets (``split`` in every block, the others in evaluation blocks).
DATASET_SETTINGS = ("split", "test_frames", "train_size")


def dataset_family(block: dict) -> str | None:
    """The dataset family (``SDSD``, ``SMID``) of a checked dataset block; ``None`` without ``type``/``mode``."""
    name = block.get("type") or block.get("mode")
    if not name:
        return None
    from sdsd.registry import DATASET_REGISTRY  # it imports the datasets' package itself

    return getattr(DATASET_REGISTRY.get(name), "family", None)


def _evaluates(phase: str) -> bool:
    return not str(phase).startswith("train")


def _preset_block(preset: Preset, phase: str, block: dict) -> dict:
    """The dataset settings ``preset`` gives the block ``datasets.<phase>``."""
    family = dataset_family(block)
    out = {"split": preset.split} if family == "SDSD" else {}
    if _evaluates(phase):
        out["test_frames"] = preset.test_frames
        if family in preset.resize:
            out["train_size"] = copy.deepcopy(preset.resize[family])
    return out


def apply_preset(opt: dict, raw: dict) -> None:
    """Fill the preset's settings into checked options wherever the raw options do not give the key.

    Args:
        opt: the checked options with defaults filled in (``protocol.preset`` already checked); changed in place.
        raw: the options as read (file plus ``--set`` overrides): a key present here was given explicitly.
    """
    protocol = opt["protocol"]
    preset = PRESETS[protocol["preset"]]
    given = raw.get("protocol") or {}
    for key in PROTOCOL_SETTINGS:
        if key not in given:
            protocol[key] = copy.deepcopy(preset.protocol[key])
    if protocol["gt_mean"] is True:
        protocol["gt_mean"] = preset.gt_mean_rule
    raw_blocks = raw.get("datasets") or {}
    for phase, block in opt["datasets"].items():
        given = raw_blocks.get(phase) or {}
        for key, value in _preset_block(preset, phase, block).items():
            if key not in given:
                block[key] = value


def settings(protocol: dict, phase: str, block: dict) -> dict:
    """The resolved settings of an evaluation, as recorded in the metrics JSON.

    Args:
        protocol: the ``protocol`` section (:func:`sdsd.evaluation.common.check_protocol`).
        phase: the name of the evaluated dataset block. block: that block.

    Returns:
        The protocol section plus the block's ``split``, ``test_frames`` and ``train_size``, and ``overrides``:
        the settings whose value differs from what the preset gives (set explicitly in the file or by ``--set``).
        ``temporal`` is recorded only when it lists a metric (no preset turns the temporal metrics on; each may).
    """
    preset = PRESETS[protocol.get("preset") or DEFAULT_PRESET]
    out = dict(protocol)
    if not out.get("temporal"):  # off (the default): recorded as before the key existed
        out.pop("temporal", None)
    out.update({key: copy.deepcopy(block.get(key)) for key in DATASET_SETTINGS})
    wanted = {key: preset.protocol[key] for key in PROTOCOL_SETTINGS}
    wanted.update(_preset_block(preset, phase, block))  # (a preset's own gt_mean is never `true`)
    out["overrides"] = {key: out[key] for key, value in wanted.items() if _canonical(key, out[key]) !=
                        _canonical(key, value)}
    return out


def _canonical(key: str, value):
    # test_frames 0 and null both mean every frame.
    return None if key == "test_frames" and not value else value
