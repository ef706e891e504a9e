"""The option schema: every key an option file may contain, with its default and meaning.

The published YAML files of the reference implementation use all the keys marked "published"; a file that
uses a key not listed here is rejected with the closest valid name. The README's options reference is
generated from this table (``python -m sdsd.options --markdown``), so the two cannot drift.

Each entry is ``key: (default, help)``. ``REQUIRED`` marks keys without a default. Nested sections are dicts of
entries; the ``datasets`` section holds one dataset block per phase name (``train``, ``val``, ``test``, ...).
"""

from __future__ import annotations

REQUIRED = object()
ANY = object()  # marks a section whose keys are not checked here (validated by the component that reads them)

DATASET_KEYS = {
    "name": ("dataset", "Free-form label used in logs (published)."),
    "mode": (None, "Dataset kind (published names: video_samesize, video_samesize1, video_samesize_smid, "
             "video_samesize_smid1); maps onto the dataset registry."),
    "type": (None, "Dataset registry name (SDSD or SMID); an alternative to `mode`."),
    "dataroot_GT": (REQUIRED, "Folder (or .lmdb) of normal-light scene folders (published)."),
    "dataroot_LQ": (REQUIRED, "Folder (or .lmdb) of low-light scene folders; `input` and `LQ` are both accepted "
                    "(published)."),
    "train_size": (None, "[W, H]: resize every frame to this size with cv2.resize (published: [960, 512])."),
    "testing_dir": (None, "Comma-separated test scene names; training uses every other scene (published)."),
    "split": ("dynamic", "dynamic (the paper's SDSD split) or static (the SNR-Aware/Retinexformer protocol, where "
              "`<scene>_2` folders belong to `<scene>`)."),
    "test_frames": (30, "Test/validation protocol: only the first this-many frames of each scene are used."),
    "max_frames": (None, "Validate on at most this many frames per scene (a quick subset); null = all."),
    "N_frames": (5, "Frames per input window (published)."),
    "padding": ("new_info", "Window rule at clip ends: new_info, replicate, reflection or circle (published)."),
    "interval_list": ([1], "Accepted for compatibility; only [1] is used (published)."),
    "random_reverse": (False, "Accepted for compatibility; no effect (published)."),
    "border_mode": (False, "Accepted for compatibility; no effect (published)."),
    "cache_keys": (None, "Accepted for compatibility; no effect (published)."),
    "cache_data": (True, "Cache decoded frames in memory (bounded) in each worker (published)."),
    "use_shuffle": (True, "Shuffle training samples (published)."),
    "n_workers": (3, "DataLoader worker processes per process (published)."),
    "batch_size": (32, "GLOBAL batch size, divided among torchrun processes (published)."),
    "GT_size": (128, "Training crop size, same location in all frames and the GT (published)."),
    "LQ_size": (128, "Accepted for compatibility; equals GT_size at scale 1 (published)."),
    "use_flip": (True, "Random horizontal flip, p=0.5 (published)."),
    "use_rot": (True, "Random vertical flip, p=0.5 (the published name; there is no transpose) (published)."),
    "color": ("RGB", "Accepted for compatibility; frames are always RGB (published)."),
    "pin_memory": (None, "Pin host memory for CUDA transfers; null = on when training on CUDA."),
}

NETWORK_KEYS = {
    "which_model_G": (None, "Network name (published: denoise_illumination_enhance)."),
    "type": (None, "Network registry name; an alternative to which_model_G."),
    "nf": (64, "Feature channels (published)."),
    "nframes": (5, "Frames per window (published)."),
    "groups": (8, "Deformable groups in PCD alignment (published)."),
    "front_RBs": (5, "Residual blocks in feature extraction (published)."),
    "back_RBs": (10, "Residual blocks in each reconstruction branch (published)."),
    "center": (None, "Index of the reference frame; null = nframes // 2."),
    "predeblur": (True, "Accepted for compatibility; no effect (published)."),
    "HR_in": (True, "Accepted for compatibility; no effect (published)."),
    "w_TSA": (True, "Use TSA fusion; false = a single 1x1 fusion conv (published)."),
    "illumination_bias": (None, "Initial bias of conv_last (illumination output) when training from scratch; null "
                          "= PyTorch default (published). 0.5 keeps the branch from starting dead (no gradient "
                          "flows where its output is below the input)."),
}

PATH_KEYS = {
    "root": ("./", "Folder under which experiments/, results/ and tb_logger/ are created (published)."),
    "pretrain_model_G": (None, "Checkpoint to start from (training) or to evaluate (testing) (published)."),
    "strict_load": (True, "Require every checkpoint key to match when loading pretrain_model_G (published)."),
    "resume_state": (None, "training_state/<iter>.state to resume from (published)."),
    "experiments_root": (None, "Derived: <root>/experiments/<name>. May be set explicitly."),
    "results_root": (None, "Derived: <root>/results/<name>. May be set explicitly."),
}

TRAIN_KEYS = {
    "lr_G": (4e-4, "Initial learning rate of Adam (published)."),
    "lr_scheme": ("CosineAnnealingLR_Restart", "CosineAnnealingLR_Restart or MultiStepLR_Restart (published)."),
    "beta1": (0.9, "Adam beta1 (published)."),
    "beta2": (0.99, "Adam beta2 (published)."),
    "weight_decay_G": (0.0, "Adam weight decay."),
    "niter": (REQUIRED, "Total training iterations (published)."),
    "ft_tsa_only": (0, "For iterations below this, only tsa_fusion parameters learn (published)."),
    "warmup_iter": (-1, "Linear warm-up iterations; -1 = none (published)."),
    "T_period": (None, "Cosine periods, one per restart segment (published)."),
    "restarts": (None, "Iterations after which the lr restarts (published)."),
    "restart_weights": (None, "lr multipliers at each restart (published)."),
    "eta_min": (1e-7, "Cosine floor (published)."),
    "lr_steps": (None, "MultiStepLR_Restart milestones."),
    "lr_gamma": (0.5, "MultiStepLR_Restart decay factor."),
    "clear_state": (None, "MultiStepLR_Restart: clear Adam state at restarts."),
    "pixel_criterion": ("cb", "cb (Charbonnier, summed) or l1 (summed) (published)."),
    "pixel_weight": (1.0, "Weight of every pixel loss term (published)."),
    "illumination_weight": (0.5, "Factor of the illumination term l_ill in the total loss (published: 0.5)."),
    "noise_weight": (1.0, "Factor of the self-supervised noise term l_noise in the total loss (published: 1)."),
    "val_freq": (5000, "Validate every this many iterations (published)."),
    "val_max_frames": (None, "Validate on at most this many frames per scene during training; null = all."),
    "manual_seed": (None, "Random seed; null picks one and logs it (published)."),
    "amp": ("none", "Mixed precision: none, bf16 or fp16 (fp16 uses a GradScaler)."),
    "channels_last": (False, "Run convolutions in channels_last memory format."),
    "compile": (False, "Wrap the network in torch.compile."),
    "nan_policy": ("stop", "On a non-finite loss: stop (error naming the iteration) or skip (drop the batch)."),
    "keep_last": (None, "Keep only the newest this-many checkpoints (models and states); null = keep all."),
    "grad_clip": (None, "Clip the gradient norm to this value; null = no clipping."),
}

LOGGER_KEYS = {
    "print_freq": (100, "Log losses every this many iterations (published)."),
    "save_checkpoint_freq": (5000, "Save weights and training state every this many iterations (published)."),
}

PROTOCOL_KEYS = {
    "average": ("scene", "scene: mean of per-scene means (published); frame: mean over all frames."),
    "channel": ("rgb", "rgb (published) or y (BT.601 luma) for PSNR/SSIM."),
    "gt_mean": (False, "Scale each output so its mean matches the GT mean before scoring (used by some papers)."),
    "self_ensemble": (False, "Average the outputs over flips (x4 cost)."),
}

TOP_KEYS = {
    "name": (REQUIRED, "Experiment name: experiments/<name>/, results/<name>/ (published)."),
    "use_tb_logger": (True, "Write TensorBoard events to tb_logger/<name> (published)."),
    "model": ("video_base", "Accepted for compatibility; the only model (published)."),
    "distortion": ("sr", "Accepted for compatibility; no effect (published)."),
    "scale": (1, "Accepted for compatibility; must be 1 (published)."),
    "gpu_ids": ([0], "GPUs to use; with no CUDA the run falls back to the CPU with one warning (published)."),
    "suffix": (None, "Accepted for compatibility; no effect (published)."),
    "crop_border": (None, "Accepted for compatibility; the published metrics crop no border (published)."),
    "is_train": (None, "Set by the program: true for train.py."),
    "datasets": ({}, "One dataset block per phase (train, val, test, ...); see the dataset keys."),
    "network_G": ({}, "The network block; see the network keys."),
    "path": ({}, "Paths; see the path keys."),
    "train": ({}, "Training settings; see the train keys."),
    "logger": ({}, "Logging settings; see the logger keys."),
    "protocol": ({}, "Evaluation protocol; see the protocol keys."),
    "conv_backend": ("auto", "CPU convolutions: auto, winograd (NNPACK), channels_last or nchw; all agree up to float "
                     "rounding (sdsd.archs.fastconv). auto = winograd where NNPACK runs (training too, unless "
                     "train.channels_last), else channels_last for testing."),
    "runtime": ("torch", "Evaluation runtime: torch, openvino, onnxruntime or auto (fastest measured; sdsd.runtimes). "
                "Always fp32; torch reproduces the published numbers to the digit, the others within 0.01 dB."),
    "dist": (False, "Set by the program: whether torch.distributed is initialised."),
}

SECTIONS = {
    "network_G": NETWORK_KEYS,
    "path": PATH_KEYS,
    "train": TRAIN_KEYS,
    "logger": LOGGER_KEYS,
    "protocol": PROTOCOL_KEYS,
}
