"""The option schema: every key an option file may contain, with its default, its allowed values and its meaning.

The published YAML files of the reference implementation use all the keys marked "published"; a file that
uses a key not listed here (nor in :data:`LEGACY`) is rejected with the closest valid name, and a value outside
what its entry allows is rejected naming the file, the key, the value and what is allowed. The README's options
reference is generated from these tables (``python -m sdsd.options --markdown``), so the two cannot drift.

Each entry is an :class:`~sdsd.options.checks.Option` ``(default, help, check)``; ``REQUIRED`` marks keys
without a default. Nested sections are dicts of entries; the ``datasets`` section holds one dataset block per
phase name (``train``, ``val``, ``test``, ...). Rules that relate several keys live in
:mod:`sdsd.options.rules`.

The ``network_G`` defaults are the published network: :func:`sdsd.options.published_network` returns them, and
the network constructor takes its defaults from here.
"""

from __future__ import annotations

from sdsd.options.checks import (
    REQUIRED,
    Check,
    Invalid,
    Option,
    boolean,
    choice,
    choice_from,
    folder_name,
    integer,
    ints,
    mapping,
    number,
    numbers,
    positive_int,
    registered,
    scene_names,
    size_pair,
    text,
)
from sdsd.options.presets import DEFAULT_PRESET, PRESET_NAMES
from sdsd.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, SCHEDULER_REGISTRY
from sdsd.utils.precision import ALIASES as AMP_ALIASES
from sdsd.utils.precision import MODES as AMP_MODES

__all__ = ["REQUIRED", "Option", "TOP_KEYS", "DATASET_KEYS", "NETWORK_KEYS", "PATH_KEYS", "TRAIN_KEYS",
           "LOGGER_KEYS", "PROTOCOL_KEYS", "SECTIONS", "LEGACY", "PUBLISHED_MODEL", "AVERAGES", "NAN_POLICIES",
           "SPLITS", "PROGRAM_KEYS"]

#: ``protocol.average``: ``scene`` = mean of per-scene means (published), ``frame`` = mean over all frames.
AVERAGES = ("scene", "frame")
#: ``train.nan_policy`` values.
NAN_POLICIES = ("stop", "skip")
#: ``datasets.<phase>.split`` values.
SPLITS = ("dynamic", "static")
#: The network of the published option files (``network_G.which_model_G``).
PUBLISHED_MODEL = "denoise_illumination_enhance"
#: Keys the program sets on the loaded options (never read from a file).
PROGRAM_KEYS = ("is_train", "dist")

_dataset_name = registered(DATASET_REGISTRY, null=True)


def precision_mode() -> Check:
    """A precision mode of :data:`sdsd.utils.precision.MODES`; an older spelling (``none``) becomes its mode."""

    def check(value):
        if isinstance(value, str) and value in AMP_ALIASES:
            return AMP_ALIASES[value]
        if isinstance(value, bool) or value not in AMP_MODES:
            raise Invalid
        return value

    return Check(", ".join(AMP_MODES) + " (none = fp32)", check)

DATASET_KEYS = {
    "name": Option("dataset", "Free-form label used in logs (published).", text("a name")),
    "mode": Option(None, "Dataset kind (published names: video_samesize, video_samesize1, video_samesize_smid, "
                   "video_samesize_smid1); maps onto the dataset registry.", _dataset_name),
    "type": Option(None, "Dataset registry name (SDSD or SMID); an alternative to `mode`.", _dataset_name),
    "dataroot_GT": Option(REQUIRED, "Folder (or .lmdb) of normal-light scene folders (published).", text("a path")),
    "dataroot_LQ": Option(REQUIRED, "Folder (or .lmdb) of low-light scene folders; `input` and `LQ` are both "
                          "accepted (published).", text("a path")),
    "train_size": Option(None, "[W, H]: resize every frame to this size with cv2.resize (published: [960, 512]). "
                         "Absent in an evaluation block: protocol.preset may set it.", size_pair()),
    "testing_dir": Option(None, "Comma-separated test scene names; training uses every other scene (published).",
                          scene_names()),
    "split": Option("dynamic", "dynamic (the paper's SDSD split) or static (the SNR-Aware/Retinexformer protocol: a "
                    "folder whose name, or its part before the first `_2`, is in testing_dir is a test folder, so "
                    "`<scene>_2` twins are tested as folders of their own). Absent: set by protocol.preset.",
                    choice(*SPLITS)),
    "test_frames": Option(30, "Test/validation protocol: only the first this-many frames of each scene are used; "
                          "0 or null = all. Absent: set by protocol.preset.", integer(minimum=0, null=True)),
    "max_frames": Option(None, "Validate on at most this many frames per scene (a quick subset); 0 or null = all.",
                         integer(minimum=0)),
    "N_frames": Option(5, "Frames per input window; equals network_G.nframes (published).",
                       integer(minimum=1, odd=True)),
    "padding": Option("new_info", "Window rule at clip ends (published: new_info).",
                      choice_from("sdsd.data.windows:PADDINGS")),
    "cache_data": Option(True, "Cache decoded frames in memory (bounded) in each worker (published).", boolean()),
    "use_shuffle": Option(True, "Shuffle training samples (published).", boolean()),
    "n_workers": Option(3, "DataLoader worker processes per process (published).", integer(minimum=0)),
    "batch_size": Option(32, "GLOBAL batch size, divided among torchrun processes (published).", positive_int()),
    "GT_size": Option(128, "Training crop size, same location in all frames and the GT; a multiple of 16 no larger "
                      "than train_size (published).", positive_int()),
    "use_flip": Option(True, "Random horizontal flip, p=0.5 (published).", boolean()),
    "use_rot": Option(True, "Random vertical flip, p=0.5 (the published name; there is no transpose) (published).",
                      boolean()),
    "pin_memory": Option(None, "Pin host memory for CUDA transfers; null = on when training on CUDA.", boolean()),
}

NETWORK_KEYS = {
    "which_model_G": Option(None, f"Network name (published: {PUBLISHED_MODEL}).",
                            registered(ARCH_REGISTRY)),
    "type": Option(None, "Network registry name; an alternative to which_model_G.",
                   registered(ARCH_REGISTRY)),
    "nf": Option(64, "Feature channels; a multiple of groups (published).", positive_int()),
    "nframes": Option(5, "Frames per window (published).", positive_int()),
    "groups": Option(8, "Deformable groups in PCD alignment (published).", positive_int()),
    "front_RBs": Option(5, "Residual blocks in feature extraction (published).", integer(minimum=0)),
    "back_RBs": Option(10, "Residual blocks in each reconstruction branch (published).", integer(minimum=0)),
    "center": Option(None, "Index of the reference frame, below nframes; null = nframes // 2.", integer(minimum=0)),
    "w_TSA": Option(True, "Use TSA fusion; false = a single 1x1 fusion conv (published).", boolean()),
    "illumination_bias": Option(None, "Initial bias of conv_last (illumination output) when training from scratch; "
                                "null = PyTorch default (published). 0.5 keeps the branch from starting dead (no "
                                "gradient flows where its output is below the input).", number()),
}

PATH_KEYS = {
    "root": Option("./", "Folder under which experiments/, results/ and tb_logger/ are created (published).",
                   text("a path")),
    "pretrain_model_G": Option(None, "Checkpoint to start from (training) or to evaluate (testing) (published).",
                               text("a path")),
    "strict_load": Option(True, "Require every checkpoint key to match when loading pretrain_model_G (published); "
                          "false only skips checkpoint keys the network lacks (every network tensor must load).",
                          boolean()),
    "resume_state": Option(None, "training_state/<iter>.state to resume from (published).", text("a path")),
    "experiments_root": Option(None, "Derived: <root>/experiments/<name>. May be set explicitly.", text("a path")),
    "results_root": Option(None, "Derived: <root>/results/<name>. May be set explicitly.", text("a path")),
}

TRAIN_KEYS = {
    "lr_G": Option(4e-4, "Initial learning rate of Adam (published).", number(minimum=0)),
    "lr_scheme": Option("CosineAnnealingLR_Restart", "Learning-rate schedule (published: CosineAnnealingLR_Restart).",
                        registered(SCHEDULER_REGISTRY)),
    "beta1": Option(0.9, "Adam beta1 (published).", number(minimum=0, below=1)),
    "beta2": Option(0.99, "Adam beta2 (published).", number(minimum=0, below=1)),
    "weight_decay_G": Option(0.0, "Adam weight decay.", number(minimum=0)),
    "niter": Option(REQUIRED, "Total training iterations (published).", positive_int()),
    "ft_tsa_only": Option(0, "For iterations below this, only tsa_fusion parameters learn; needs network_G.w_TSA "
                          "(published).", integer(minimum=0)),
    "warmup_iter": Option(-1, "Linear warm-up iterations; -1 = none (published).", integer(minimum=-1)),
    "T_period": Option(None, "Cosine periods, one per restart segment; required by CosineAnnealingLR_Restart "
                       "(published).", ints(minimum=1)),
    "restarts": Option(None, "Iterations after which the lr restarts (published).", ints(minimum=0)),
    "restart_weights": Option(None, "lr multipliers, one per restart (published).", numbers(minimum=0)),
    "eta_min": Option(1e-7, "Cosine floor (published).", number(minimum=0)),
    "lr_steps": Option(None, "MultiStepLR_Restart milestones.", ints(minimum=0)),
    "lr_gamma": Option(0.5, "MultiStepLR_Restart decay factor.", number(above=0)),
    "clear_state": Option(None, "MultiStepLR_Restart: clear Adam state at restarts.", boolean()),
    "pixel_criterion": Option("cb", "cb (Charbonnier, summed) or l1 (summed) (published).",
                              registered(LOSS_REGISTRY)),
    "pixel_weight": Option(1.0, "Weight of every pixel loss term (published).", number(minimum=0)),
    "illumination_weight": Option(0.5, "Factor of the illumination term l_ill in the total loss (published: 0.5).",
                                  number(minimum=0)),
    "noise_weight": Option(1.0, "Factor of the self-supervised noise term l_noise in the total loss (published: 1).",
                           number(minimum=0)),
    "noisy_copy": Option(True, "Train on the self-supervised noisy copy L + (L - mean) too (published: true). false "
                         "trains on the clean window alone, at half the cost per iteration; needs noise_weight 0.",
                         boolean()),
    "val_freq": Option(5000, "Validate every this many iterations (published).", positive_int()),
    "val_max_frames": Option(None, "Validate on at most this many frames per scene during training; null = all.",
                             positive_int()),
    "manual_seed": Option(None, "Random seed; null picks one and logs it (published).", integer()),
    "amp": Option("fp32", "Precision of training and validation: fp32, or bf16 / fp16 mixed precision (fp16 uses a "
                  "GradScaler); `none` is the older name of fp32.", precision_mode()),
    "compile": Option(False, "Wrap the network in torch.compile.", boolean()),
    "nan_policy": Option("stop", "On a non-finite loss: stop (error naming the iteration) or skip (drop the batch).",
                         choice(*NAN_POLICIES)),
    "keep_last": Option(None, "Keep only the newest this-many checkpoints (models and states); null = keep all.",
                        positive_int()),
    "grad_clip": Option(None, "Clip the gradient norm to this value; null = no clipping.", number(above=0)),
}

LOGGER_KEYS = {
    "print_freq": Option(100, "Log losses every this many iterations (published).", positive_int()),
    "save_checkpoint_freq": Option(5000, "Save weights and training state every this many iterations (published).",
                                   positive_int()),
}

def _gt_mean(value):
    if isinstance(value, bool) or value in ("bt601", "retinexformer"):
        return value
    raise Invalid


PROTOCOL_KEYS = {
    "preset": Option(DEFAULT_PRESET, "Whose reporting protocol fills the keys below and the dataset keys split, "
                     "test_frames and train_size that the file does not set: sdsd (SDSD-Net, published), snr-aware "
                     "(SNR-Aware, CVPR 2022), retinexformer (Retinexformer, ICCV 2023); see the README's protocol "
                     "comparison. Keys set explicitly win.", choice(*PRESET_NAMES)),
    "average": Option("scene", "scene: mean of per-scene means (published; a static `_2` twin is a scene of its "
                      "own); frame: mean over all frames.", choice(*AVERAGES)),
    "channel": Option("rgb", "rgb (published) or y (BT.601 luma) for PSNR/SSIM.", choice_from("sdsd.metrics:CHANNELS")),
    "psnr": Option("uint8", "uint8: PSNR of the output rounded to uint8 (published); float: of the float output "
                   "clamped to [0, 1], float32 mean, 100 dB for identical frames (Retinexformer); float needs "
                   "channel rgb.", choice_from("sdsd.metrics:PSNR_MODES")),
    "ssim": Option(True, "Compute SSIM (on the uint8 images); false records null (SNR-Aware's test computes none).",
                   boolean()),
    "gt_mean": Option(False, "Scale each output so its mean brightness matches the GT's before scoring: false "
                      "(published), bt601 (BT.601 luma), retinexformer (Retinexformer's --GT_mean: grey of RGB read "
                      "as BGR, red and blue weights swapped), or true = the preset's rule (bt601; retinexformer "
                      "under the retinexformer preset).",
                      Check("true, false, bt601 or retinexformer", _gt_mean)),
    "self_ensemble": Option(False, "Average the outputs over flips (x4 cost).", boolean()),
    "exposure": Option("off", "off (published): inputs as they are; auto: each scene's inputs brought, in linear "
                       "light with a smoothly varying gain, to the white level of the training inputs (99th "
                       "percentile over 4x4 averages, from the checkpoint's sidecar <model>.json); a number in "
                       "(0, 1]: that target.",
                       Check("off, auto, or a number in (0, 1]", lambda v: _exposure_setting(v))),
    "temporal": Option([], "Temporal metrics scored beside PSNR/SSIM, a list of warp (warping error on the GT's "
                       "optical flow, Lai et al. 2018) and flicker (change of mean brightness against the GT's); "
                       "[] (published): none, and the metrics JSON is as without it. Any preset may use them.",
                       Check("a list of warp, flicker (or [])", lambda v: _temporal_setting(v))),
}


def _temporal_setting(value):
    from sdsd.metrics.temporal import TEMPORAL_METRICS

    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or any(not isinstance(v, str) or v not in TEMPORAL_METRICS for v in items):
        raise Invalid
    return [m for m in TEMPORAL_METRICS if m in items]


def _exposure_setting(value):
    from sdsd.errors import UserError
    from sdsd.exposure import parse_setting

    try:
        return parse_setting(value)
    except UserError:
        raise Invalid from None

TOP_KEYS = {
    "name": Option(REQUIRED, "Experiment name: experiments/<name>/, results/<name>/ (published).", folder_name()),
    "use_tb_logger": Option(True, "Write TensorBoard events to tb_logger/<name> (published).", boolean()),
    "gpu_ids": Option([0], "GPUs to use; with no CUDA the run falls back to the CPU with one warning (published).",
                      ints(minimum=0)),
    "conv_backend": Option("auto", "Convolution backend and memory format, for training and testing alike: "
                           "winograd = NNPACK Winograd kernels on the CPU (NCHW), channels_last = NHWC, nchw = plain "
                           "PyTorch; auto = winograd on a CPU with NNPACK, else channels_last on a CPU and nchw on "
                           "other devices. All agree up to float rounding (sdsd.archs.fastconv).",
                           choice_from("sdsd.archs.fastconv:CONV_BACKENDS")),
    "runtime": Option("torch", "Evaluation runtime: one of sdsd.runtimes.registry, or auto (fastest measured). "
                      "fp32 unless `precision` says int8; torch reproduces the published numbers to the digit, the "
                      "others within 0.01 dB.", choice_from("sdsd.runtimes.registry:CHOICES")),
    "precision": Option("fp32", "Evaluation precision: fp32 (the published numbers), or int8 (runtime openvino: "
                        "NNCF post-training quantization calibrated on the first frames evaluated; inference only, "
                        "never a train.amp).", choice_from("sdsd.runtimes.registry:EVALUATION_PRECISIONS")),
    "datasets": Option({}, "One dataset block per phase (train, val, test, ...); see the dataset keys.", mapping),
    "network_G": Option({}, "The network block; see the network keys.", mapping),
    "path": Option({}, "Paths; see the path keys.", mapping),
    "train": Option({}, "Training settings; see the train keys.", mapping),
    "logger": Option({}, "Logging settings; see the logger keys.", mapping),
    "protocol": Option({}, "Evaluation protocol; see the protocol keys (protocol.preset fills what is not set).",
                       mapping),
}

SECTIONS = {
    "network_G": NETWORK_KEYS,
    "path": PATH_KEYS,
    "train": TRAIN_KEYS,
    "logger": LOGGER_KEYS,
    "protocol": PROTOCOL_KEYS,
}

_ignored = "Accepted for compatibility; ignored"

#: Legacy keys: accepted where published (or older) option files put them, checked where a value other than the
#: published one would ask for something this implementation does not do, and then dropped from the loaded options
#: (no component receives them). Keyed by section: ``""`` is the top level, ``"datasets"`` every dataset block.
LEGACY = {
    "": {
        "model": Option("video_base", f"{_ignored} (published: video_base, the only model)."),
        "distortion": Option("sr", f"{_ignored} (published: sr)."),
        "scale": Option(1, "Accepted for compatibility; must be 1: SDSD-Net does not change resolution (published).",
                        choice(1)),
        "suffix": Option(None, f"{_ignored} (published)."),
        "crop_border": Option(None, f"{_ignored}; the published metrics crop no border (published)."),
        "is_train": Option(None, f"{_ignored}: the program sets it (true for train.py)."),
        "dist": Option(None, f"{_ignored}: the program sets it (whether torch.distributed is initialised)."),
    },
    "datasets": {
        "interval_list": Option([1], f"{_ignored}; consecutive frames are always used (published: [1])."),
        "random_reverse": Option(False, f"{_ignored} (published: false)."),
        "border_mode": Option(False, f"{_ignored} (published: false)."),
        "cache_keys": Option(None, f"{_ignored} (published)."),
        "LQ_size": Option(128, f"{_ignored}; equals GT_size at scale 1 (published)."),
        "color": Option("RGB", f"{_ignored}; frames are always RGB (published)."),
    },
    "network_G": {
        "predeblur": Option(True, f"{_ignored}; not passed to the network (published)."),
        "HR_in": Option(True, f"{_ignored}; not passed to the network (published)."),
    },
    "train": {
        "channels_last": Option(False, "Old name of `conv_backend: channels_last`: true sets it (an explicit "
                                "conv_backend that says otherwise is an error).", boolean()),
    },
}
