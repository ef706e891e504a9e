"""One training run, as a sequence of small steps: prepare, build, (resume), loop, save.

:func:`train` is the whole run and is what ``train.py`` and in-process callers (the demo, tests) call. The pieces
(:func:`train_step`, :func:`run_validation`, :func:`sdsd.training.checkpoint.write_checkpoint`,
the loggers in :mod:`sdsd.training.log`) can each be used alone. Validation runs the network through the inference
engine (:mod:`sdsd.inference`) and scores it with :func:`sdsd.evaluation.quantitative.score`, the loop of
``quantitative_test.py``: the PSNR logged here is the one the quantitative test reports for the same weights.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import errno
import hashlib
import logging
import os
import random
import shutil
import time

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from dcn import report_offsets
from sdsd.archs import build_network, load_network, unwrap
from sdsd.archs.fastconv import apply_conv_backend
from sdsd.errors import UserError
from sdsd.exposure import is_legacy, read_sidecar, recorded_seed, sidecar_path, training_statistics, write_sidecar
from sdsd.losses import SDSDObjective, noisy_copy
from sdsd.options import check_training
from sdsd.training import checkpoint as ckpt
from sdsd.training.cli import (
    FAILURES_DIR,
    check_repeated_failure,
    clear_failures,
    record_failure,
    restarts_allowed,
    torchrun_restart_count,
)
from sdsd.training.experiment import LOCK_NAME, ExperimentLock
from sdsd.training.log import (
    Progress,
    TensorBoardLogger,
    close_text_log,
    log_run_header,
    setup_text_log,
    timestamp,
)
from sdsd.training.optim import apply_ft_tsa_only, build_optimizer
from sdsd.training.schedulers import apply_warmup, build_scheduler
from sdsd.utils import precision
from sdsd.utils.dist import DistInfo, all_gather_object, init_distributed
from sdsd.utils.io import remove_stale_temps
from sdsd.utils.signals import sigterm_as_interrupt

logger = logging.getLogger("sdsd")


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite (``train.nan_policy: stop``)."""


@dataclasses.dataclass
class TrainState:
    """Everything a training iteration touches."""

    opt: dict
    dist: DistInfo
    model: nn.Module  # the plain network (weights are saved from here)
    net: nn.Module  # what the loop calls: model, possibly wrapped by DDP / torch.compile
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    objective: SDSDObjective
    amp_dtype: torch.dtype | None
    channels_last: bool
    iteration: int = 0
    epoch: int = 0
    epoch_done: bool = False  # the last batch of ``epoch`` has been consumed (a checkpoint then stores epoch + 1)
    input_stats: dict | None = None  # what the training inputs look like: the sidecar of every saved checkpoint

    @property
    def device(self) -> torch.device:
        return self.dist.device

    def autocast(self):
        """The mixed-precision context of this run (a no-op with ``train.amp: fp32``)."""
        return precision.autocast(self.device, self.opt["train"]["amp"])


# -- the steps of a run --------------------------------------------------------------------------------------------


def seed_everything(seed: int | None) -> int:
    """Seed Python, NumPy and torch identically on every rank; ``None`` picks a seed (rank 0's, shared)."""
    if seed is None:
        seed = random.SystemRandom().randint(1, 10000)
    seed = int(all_gather_object(seed)[0])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return seed


def prepare_experiment(opt: dict, auto_resume: bool, rank: int, lock: ExperimentLock | None = None) -> str | None:
    """Lock the experiment folder, decide whether this run resumes, set aside or archive what it must, create folders.

    Rank 0 decides; every rank gets the same answer, or the same :class:`UserError`. In order:

    1. ``lock`` (rank 0; :class:`~sdsd.training.experiment.ExperimentLock`), when given, is taken: a second run
       with the same experiment folder stops here with a one-line error naming the holder's host and pid.
    2. Temporary files that an interrupted write left in the folder (``.<name>.<random>.tmp<ext>``) are removed.
    3. Under ``torchrun --max-restarts``: a first attempt forgets older failure records; a restarted one stops with
       an error when the two attempts before it failed the same way (:func:`sdsd.training.cli.check_repeated_failure`).
    4. What to resume from:

       * ``path.resume_state`` given: that state; it must be a readable training state (else an error; its weights
         are checked when loading). No fall-back: the user named it.
       * ``auto_resume``: the newest iteration whose state AND weights both load
         (:func:`~sdsd.training.checkpoint.find_latest_state`); damaged pairs are skipped with a warning. When the
         folder has no ``training_state/<iter>.state`` file at all (a new experiment, or one killed before its first
         checkpoint) the run starts from iteration 0. When it has state files but none of them is resumable, it is an
         error: starting afresh would archive the experiment and lose its progress silently.

    5. Resuming from iteration ``k``: weights and states of later iterations in this experiment are moved to
       ``set_aside_<time>/`` (kept, not deleted), so that pruning and a later ``--auto_resume`` only see the new line.
       Starting afresh in a non-empty folder: the folder (and its TensorBoard folder) is renamed to
       ``<name>_archived_<time>`` as before; the lock moves to the new folder.

    Returns:
        The training state to resume from, or ``None`` for a fresh run.

    Raises:
        UserError: on every rank, for the errors above.
    """
    paths = opt["path"]
    exp_root = paths["experiments_root"]
    decision, failure = None, None
    if rank == 0:
        try:
            decision = {"resume": _decide_resume(opt, exp_root, auto_resume, lock)}
        except UserError as exc:
            decision, failure = {"error": str(exc), "kind": type(exc)}, exc
    decision = all_gather_object(decision)[0]
    if failure is not None:
        raise failure
    if "error" in decision:
        raise decision["kind"](decision["error"])
    return decision["resume"]


def _decide_resume(opt: dict, exp_root: str, auto_resume: bool, lock: ExperimentLock | None) -> str | None:
    """Rank 0's part of :func:`prepare_experiment`."""
    if lock is not None:
        lock.acquire()
    for sub in ("", "models", "training_state", "val_images"):
        # The lock is held: nobody else writes here, so every temporary file of ours is an interrupted write's.
        for path in remove_stale_temps(os.path.join(exp_root, sub)):
            logger.warning("removed %s, left by an interrupted write", path)
    restart = torchrun_restart_count()
    if restarts_allowed() and restart == 0:
        clear_failures(exp_root)
    elif restart:
        check_repeated_failure(exp_root, restart)

    resume = opt["path"].get("resume_state")
    if resume is not None:
        iteration = int(ckpt.read_training_state(resume)["iter"])
    elif auto_resume:
        problems: list[str] = []
        resume = ckpt.find_latest_state(exp_root, problems)
        if resume is None and problems:
            raise UserError(f"--auto_resume: none of the {len(problems)} training states in "
                            f"{ckpt.states_dir(exp_root)} can be resumed (newest: {problems[0]}); restore the "
                            "files, name one with --set path.resume_state=..., or move the folder away to start afresh")
        iteration = int(ckpt.read_training_state(resume)["iter"]) if resume else None

    if resume is not None:
        ckpt.set_aside_newer(exp_root, iteration)
    elif os.path.isdir(exp_root) and set(os.listdir(exp_root)) - {LOCK_NAME, FAILURES_DIR}:
        stamp = timestamp()
        archived = f"{exp_root.rstrip('/')}_archived_{stamp}"
        if os.path.exists(archived) or os.path.exists(f"{tb_log_dir(opt).rstrip('/')}_archived_{stamp}"):
            stamp += f"_{os.getpid()}"  # two archives within one second
            archived = f"{exp_root.rstrip('/')}_archived_{stamp}"
        os.replace(exp_root, archived)
        logger.warning("%s exists: moved it to %s", exp_root, archived)
        if lock is not None and lock.held:
            lock.reacquire_after_move(archived)
        if os.path.isdir(os.path.join(archived, FAILURES_DIR)):  # restarts keep counting in the new folder
            os.makedirs(exp_root, exist_ok=True)
            os.replace(os.path.join(archived, FAILURES_DIR), os.path.join(exp_root, FAILURES_DIR))
        tb_dir = tb_log_dir(opt)
        if os.path.isdir(tb_dir) and opt.get("use_tb_logger"):
            os.replace(tb_dir, f"{tb_dir.rstrip('/')}_archived_{stamp}")
    for sub in ("models", "training_state", "val_images"):
        os.makedirs(os.path.join(exp_root, sub), exist_ok=True)
    return resume


def tb_log_dir(opt: dict) -> str:
    """``<root>/tb_logger/<name>``: where TensorBoard events go."""
    return os.path.join(opt["path"]["root"], "tb_logger", opt["name"])


def build_data(opt: dict, info: DistInfo, seed: int):
    """Build the training loader and, when ``datasets.val`` is given, the validation loader.

    The published ``val`` block has no ``testing_dir``; it then inherits the train block's ``testing_dir`` so that
    validation runs on the held-out scenes. ``train.val_max_frames`` limits the frames per validation scene.

    Returns:
        ``(train_loader, train_sampler, val_dataset or None)``.
    """
    from sdsd.data import build_dataloader, build_dataset

    train_opt = opt["datasets"]["train"]
    train_set = build_dataset(train_opt, "train")
    train_set[0]  # loads one sample now, so a crop larger than the frames fails before any training
    loader, sampler = build_dataloader(train_set, train_opt, "train", rank=info.rank, world_size=info.world_size,
                                       seed=seed, device_type=info.device.type)
    logger.info("training data: %d windows from %d scenes, %d iterations per epoch", len(train_set),
                len(train_set.scenes), len(loader))
    val_set = None
    val_opt = opt["datasets"].get("val")
    if val_opt is not None:
        val_opt = copy.deepcopy(val_opt)
        if not val_opt.get("testing_dir") and train_opt.get("testing_dir"):
            val_opt["testing_dir"] = train_opt["testing_dir"]
        if opt["train"].get("val_max_frames"):
            val_opt["max_frames"] = opt["train"]["val_max_frames"]
        val_set = build_dataset(val_opt, "val")
        logger.info("validation data: %d windows from %d scenes (%s)", len(val_set), len(val_set.scenes),
                    ", ".join(val_set.scenes))
    else:
        logger.info("no datasets.val block: no validation during training")
    return loader, sampler, val_set


def build_training(opt: dict, info: DistInfo, resuming: bool = False) -> TrainState:
    """Network (with ``pretrain_model_G`` unless resuming), optimiser, schedule, AMP scaler, objective, wrappers."""
    train_opt = opt["train"]
    model = build_network(opt["network_G"]).to(info.device)
    pretrain = opt["path"]["pretrain_model_G"]
    if pretrain and not resuming:
        load_network(model, pretrain, strict=bool(opt["path"]["strict_load"]))
        logger.info("loaded pretrain_model_G %s (strict_load=%s)", pretrain, opt["path"]["strict_load"])
    # conv_backend (the one memory-format switch; the legacy train.channels_last maps onto it at load): on CPUs
    # auto = NNPACK Winograd for the 3x3 convs' forward and input gradient (sdsd.archs.fastconv); the weights and
    # checkpoints are unchanged, and autocast / torch.compile calls fall back to the plain convolution.
    backend = apply_conv_backend(model, info.device, opt["conv_backend"])
    logger.info("conv_backend: %s", backend)
    channels_last = backend == "channels_last"
    optimizer = build_optimizer(model, train_opt)
    scheduler = build_scheduler(optimizer, train_opt)
    amp = train_opt["amp"]
    scaler = torch.amp.GradScaler(info.device.type, enabled=amp == "fp16")
    net = model
    if info.world_size > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    if train_opt["compile"]:
        net = torch.compile(net)
    objective = SDSDObjective(train_opt["pixel_criterion"], train_opt["pixel_weight"], unwrap(model).center,
                              train_opt["illumination_weight"], train_opt["noise_weight"])
    return TrainState(opt=opt, dist=info, model=model, net=net, optimizer=optimizer, scheduler=scheduler,
                      scaler=scaler, objective=objective, amp_dtype=precision.dtype(amp), channels_last=channels_last)


def resume(state: TrainState, state_path: str) -> None:
    """Restore weights, optimiser, schedule, scaler, RNG states, iteration and epoch from a ``.state`` file."""
    saved = ckpt.read_training_state(state_path)
    ckpt.check_same_network(saved, state.opt["network_G"], state_path)
    weights = ckpt.weights_for_state(state_path, saved["iter"])
    if not os.path.isfile(weights):
        raise UserError(f"path.resume_state {state_path}: its weights {weights} are missing; resume from another "
                        "state or restore the file")
    load_network(state.model, weights, strict=True)
    try:
        state.optimizer.load_state_dict(saved["optimizers"][0])
    except ValueError as exc:
        raise UserError(f"path.resume_state {state_path} does not fit this optimiser ({exc}); check train.ft_tsa_only "
                        "and network_G") from None
    state.scheduler.load_state_dict(saved["schedulers"][0])
    if saved.get("scaler") and state.scaler.is_enabled():
        state.scaler.load_state_dict(saved["scaler"])
    rngs = saved.get("rng") or []
    if len(rngs) == state.dist.world_size:
        ckpt.set_rng_state(rngs[state.dist.rank])
    state.iteration, state.epoch = int(saved["iter"]), int(saved["epoch"])
    logger.info("resumed from %s: iteration %d, epoch %d", state_path, state.iteration, state.epoch)


def train_step(state: TrainState, batch: dict, iteration: int) -> dict[str, torch.Tensor] | None:
    """One iteration: schedule, batched forward of the clean and noisy copies (or of the clean window alone with
    ``train.noisy_copy: false``), loss, backward, Adam step.

    The clean window and its noisy copy go through the network as ONE batch of ``2B``. Under DDP each rank's
    summed loss is multiplied by the world size before ``backward`` so that DDP's gradient averaging yields the
    gradient of the loss summed over the whole global batch, as a single process with that batch computes it.

    Returns:
        The loss terms of this rank (detached), or ``None`` when a non-finite loss was skipped.

    Raises:
        NonFiniteLossError: the loss is NaN/inf and ``train.nan_policy`` is ``stop``.
    """
    train_opt = state.opt["train"]
    state.scheduler.step()
    apply_warmup(state.optimizer, iteration, train_opt["warmup_iter"], state.scheduler)
    apply_ft_tsa_only(state.optimizer, iteration, train_opt.get("ft_tsa_only") or 0)

    lq = batch["LQs"].to(state.device, non_blocking=True)
    gt = batch["GT"].to(state.device, non_blocking=True)
    b = lq.shape[0]
    if train_opt["noisy_copy"]:
        both = torch.cat([lq, noisy_copy(lq)], dim=0)
        with state.autocast():
            outputs = state.net(both)
        clean = tuple(o[:b] for o in outputs)
        noisy = tuple(o[b:] for o in outputs)
    else:
        with state.autocast():
            clean, noisy = tuple(state.net(lq)), None
    terms = state.objective(clean, noisy, lq, gt)

    if not _all_finite(terms.total):
        values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.as_dict().items())
        if train_opt.get("nan_policy") == "skip":
            logger.warning("iteration %d: non-finite loss (%s); batch skipped (train.nan_policy: skip)",
                           iteration, values)
            state.optimizer.zero_grad(set_to_none=True)
            return None
        raise NonFiniteLossError(f"iteration {iteration}: the loss is not finite ({values}); lower train.lr_G, check "
                                 "the data, or set train.nan_policy: skip to drop such batches")

    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(terms.total * state.dist.world_size).backward()
    if train_opt.get("grad_clip"):
        state.scaler.unscale_(state.optimizer)
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), float(train_opt["grad_clip"]))
    state.scaler.step(state.optimizer)
    state.scaler.update()
    return {k: v.detach() for k, v in terms.as_dict().items()}


def _all_finite(total: torch.Tensor) -> bool:
    """Whether the loss is finite on every rank (all ranks must agree to skip or stop together)."""
    flag = torch.isfinite(total.detach()).to(torch.int32)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag)


def reduce_terms(terms: dict[str, torch.Tensor]) -> dict[str, float]:
    """Sum the loss terms over ranks: the values a single process with the global batch would report."""
    keys = list(terms)
    stacked = torch.stack([terms[k].float() for k in keys])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(stacked)
    return dict(zip(keys, stacked.tolist()))


def save_checkpoint(state: TrainState) -> None:
    """Gather every rank's RNG state and write weights + training state on rank 0 (all ranks call this).

    A write that fails for lack of space or another I/O error is one :class:`UserError` on every rank, naming the
    cause; the previous checkpoint is untouched (writes are atomic) and the incomplete weights of this iteration are
    removed, so ``--auto_resume`` continues from the previous one.
    """
    rngs = all_gather_object(ckpt.get_rng_state())
    error = None
    if state.dist.is_main:
        # Resuming restarts the stored epoch from its first batch (as the reference does); a state written after
        # the last batch of an epoch therefore stores the next epoch, so no epoch is seen twice.
        epoch = state.epoch + 1 if state.epoch_done else state.epoch
        exp_root = state.opt["path"]["experiments_root"]
        try:
            path = ckpt.write_checkpoint(exp_root, state.iteration, epoch, state.model, state.optimizer,
                                        state.scheduler, state.scaler, rng_states=rngs,
                                        network_opt=state.opt["network_G"], keep_last=state.opt["train"]["keep_last"],
                                         input_stats=state.input_stats)
            logger.info("saved %s", path)
        except (OSError, RuntimeError) as exc:
            error = _write_failure(exc, exp_root, state.iteration)
            if error is None:
                raise
    error = all_gather_object(error)[0]
    if error is not None:
        raise UserError(error)


def _write_failure(exc: BaseException, exp_root: str, iteration: int, what: str | None = None) -> str | None:
    """The one-line message for a checkpoint write that failed with an I/O error; ``None`` for other errors.

    ``torch.save`` reports a failed write as a ``RuntimeError`` of its archive writer, with the ``OSError`` (e.g.
    ``ENOSPC``) only in its context, if at all; both count as I/O errors here.
    """
    cause, seen = None, exc
    while seen is not None and cause is None:
        if isinstance(seen, OSError):
            cause = seen
        seen = seen.__cause__ or seen.__context__
    writer = isinstance(exc, RuntimeError) and any(
        word in str(exc) for word in ("PytorchStreamWriter", "inline_container", "file write failed"))
    if cause is None and not writer:
        return None
    orphan = os.path.join(ckpt.models_dir(exp_root), f"{iteration}_G.pth")
    if what is None and not os.path.exists(os.path.join(ckpt.states_dir(exp_root), f"{iteration}.state")):
        for path in (orphan, sidecar_path(orphan)):
            with contextlib.suppress(OSError):
                os.remove(path)  # weights (and their statistics) without their state: not a checkpoint
    try:
        free_bytes = shutil.disk_usage(exp_root).free
        free = f"; {free_bytes / 2**20:.1f} MiB free there"
    except OSError:
        free_bytes, free = None, ""
    if cause is not None and cause.errno is not None:
        reason = f"{os.strerror(cause.errno)} (errno {errno.errorcode.get(cause.errno, cause.errno)})"
    else:
        reason = (str(cause or exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        # torch.save to a path reports a short write only as its archive writer's position mismatch
        sizes = [entry.stat().st_size for entry in os.scandir(ckpt.states_dir(exp_root)) if entry.is_file()] \
            if os.path.isdir(ckpt.states_dir(exp_root)) else []
        if free_bytes is not None and free_bytes < 2 * max(sizes, default=2**20):
            reason = f"the disk is full (the write stopped short: {reason})"
    previous = ckpt.find_latest_state(exp_root)
    kept = f"the last checkpoint, {previous}, is intact" if previous else "no earlier checkpoint exists"
    what = what or f"the checkpoint of iteration {iteration}"
    return (f"could not write {what} in {exp_root}: {reason}{free}; {kept}; "
            "free space (or fix the folder) and run again with --auto_resume")


def run_validation(state: TrainState, dataset, tb: TensorBoardLogger) -> dict:
    """Score the network on the validation scenes as ``quantitative_test.py`` does (the ``protocol`` section),
    log PSNR/SSIM, save the first frame's panel to ``val_images/`` and TensorBoard. All ranks call this.

    The training network runs as it is (its convolution backend and ``train.amp`` precision), in eval mode.
    """
    from sdsd.evaluation.common import check_protocol
    from sdsd.evaluation.qualitative import PanelKeeper
    from sdsd.evaluation.quantitative import score
    from sdsd.evaluation.visualize import write_png
    from sdsd.inference import build_engine

    protocol = check_protocol(state.opt)
    engine = build_engine(unwrap(state.model), state.device, runtime="torch", precision=state.opt["train"]["amp"],
                          conv_backend=None, chunk=4, self_ensemble=protocol["self_ensemble"])
    backend = engine.backend
    keeper = PanelKeeper((dataset.scenes[0], 0) if dataset.scenes else None)  # the qualitative test's panel
    try:
        metrics = score(engine, dataset, protocol, state.dist, consumers=[keeper])
    finally:
        backend.close()
    panels = all_gather_object(keeper.panel)
    panel = next((p for p in panels if p is not None), None)
    if state.dist.is_main:
        ssim = "off" if metrics["ssim"] is None else f"{metrics['ssim']:.4f}"  # off under protocol.ssim: false
        logger.info("validation at iteration %d: PSNR %.4f dB, SSIM %s (%d frames, %d scenes, %s average)",
                    state.iteration, metrics["psnr"], ssim, len(metrics["frames"]),
                    len(metrics["scenes"]), protocol["average"])
        tb.scalars({tag: value for tag, value in (("val/psnr", metrics["psnr"]), ("val/ssim", metrics["ssim"]))
                    if value is not None}, state.iteration)
        if panel is not None:
            write_png(panel, os.path.join(state.opt["path"]["experiments_root"], "val_images",
                                          f"{state.iteration}.png"))
            tb.image("val/input_output_illumination_gt", panel[..., ::-1].copy(), state.iteration)
    return {"psnr": metrics["psnr"], "ssim": metrics["ssim"], "frames": len(metrics["frames"]),
            "scenes": metrics["scenes"]}


# -- the run -----------------------------------------------------------------------------------------------------------


def train(opt: dict, *, auto_resume: bool = False, argv: list[str] | None = None, progress: bool | None = None,
          dist_info: DistInfo | None = None) -> dict:
    """Train SDSD-Net as the options say; the function behind ``train.py``.

    While it runs, rank 0 holds the experiment folder's lock (a second run with the same folder stops with an error
    naming this one), and SIGTERM unwinds like Ctrl-C (:mod:`sdsd.utils.signals`): a write in progress removes its
    temporary file. Under ``torchrun --max-restarts`` a failure is recorded for
    :func:`sdsd.training.cli.check_repeated_failure`.

    Args:
        opt: validated options (:func:`sdsd.options.load` with ``is_train=True``).
        auto_resume: resume from the newest complete ``training_state/<iter>.state`` of the experiment, if any
            (see :func:`prepare_experiment` for what happens when there is none).
        argv: the command line, written to the log (``None`` for in-process calls).
        progress: show a tqdm bar on rank 0 (default: when stderr is a terminal).
        dist_info: the result of :func:`sdsd.utils.dist.init_distributed`; by default it is called here
            (world size 1 unless launched by torchrun).

    Returns:
        ``{'iteration', 'experiments_root', 'latest_G', 'log_file', 'val', 'world_size'}`` (``val`` is the last
        validation's metrics or ``None``).

    Raises:
        UserError: bad options or data (before any work), an experiment folder in use, nothing to resume, a
            checkpoint that cannot be written (e.g. a full disk), or a non-finite loss (naming the iteration).
    """
    opt = copy.deepcopy(opt)
    opt["is_train"] = True
    info = dist_info or init_distributed(opt.get("gpu_ids"))
    opt["dist"] = info.world_size > 1
    check_training(opt, info.world_size)  # the world size this run really has (checked at load from WORLD_SIZE)
    exp_root = opt["path"]["experiments_root"]
    lock = ExperimentLock(exp_root) if info.is_main else None
    where = _Where()
    try:
        with sigterm_as_interrupt():
            return _run(opt, info, auto_resume, argv, progress, lock, where)
    except Exception as exc:
        record_failure(exp_root, info.rank, where.iteration, exc)
        raise
    finally:
        if lock is not None:
            lock.release()


@contextlib.contextmanager
def _held_back(log: logging.Logger):
    """Collect the warnings logged inside the block (before the log file exists) to replay them into it.

    If the block raises, they are printed at once, as they would have been without this.
    """
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    log.addHandler(handler)
    try:
        yield records
    except BaseException:
        log.removeHandler(handler)
        for record in records:
            logging.lastResort.handle(record)
        raise
    finally:
        log.removeHandler(handler)


@dataclasses.dataclass
class _Where:
    """How far a run got (the iteration in progress), for the failure record."""

    iteration: int | None = None


def _run(opt: dict, info: DistInfo, auto_resume: bool, argv, progress, lock, where: _Where) -> dict:
    """The body of :func:`train` (options checked; the caller holds the lock's release and the failure record)."""
    train_opt, log_opt = opt["train"], opt["logger"]
    exp_root = opt["path"]["experiments_root"]
    with _held_back(logger) as early:  # what prepare_experiment says (archived, set aside, ...) goes to the log too
        resume_path = prepare_experiment(opt, auto_resume, info.rank, lock=lock)
    log_file = setup_text_log(exp_root, info.rank, timestamp())
    for record in early:
        logger.handle(record)
    tb = TensorBoardLogger(tb_log_dir(opt), enabled=info.is_main and bool(opt.get("use_tb_logger")))
    bar = None
    try:
        per_process = opt["datasets"]["train"]["batch_size"] // info.world_size
        log_run_header(opt, argv, info.world_size, info.device, per_process)
        seed = seed_everything(train_opt.get("manual_seed"))
        logger.info("random seed %d", seed)
        loader, sampler, val_set = build_data(opt, info, seed)
        state = build_training(opt, info, resuming=bool(resume_path))
        if info.is_main:
            # A resumed run keeps the statistics its checkpoints already carry (the same data, measured once),
            # unless they are version 1 (no noise-robust white level): those are measured again, with the seed
            # they recorded. A fresh run measures a bounded sample without touching the random streams the
            # training uses.
            saved = None
            if resume_path:
                saved = read_sidecar(ckpt.weights_for_state(resume_path, ckpt.read_training_state(resume_path)["iter"]))
                if saved is not None and is_legacy(saved):
                    logger.info("the resumed checkpoint's training statistics are version 1; measuring them again")
                    saved = training_statistics(loader.dataset, recorded_seed(saved, seed))
                elif saved is not None and not ("noise_sigma" in saved["input"] and "windows" in saved):
                    logger.info("the resumed checkpoint's training statistics lack the noise level or window "
                                "count; measuring them again")
                    saved = training_statistics(loader.dataset, recorded_seed(saved, seed))
            state.input_stats = saved or training_statistics(loader.dataset, seed)
            logger.info("training inputs: mean linear brightness %.4g, noise level %.4g (%d windows)",
                        state.input_stats["input"]["mean_linear"], state.input_stats["input"]["noise_sigma"],
                        state.input_stats["windows"])
        if resume_path:
            resume(state, resume_path)
        where.iteration = state.iteration + 1  # the iteration in progress, from fetching its batch on
        niter = train_opt["niter"]
        logger.info("training from iteration %d to %d", state.iteration + 1, niter)

        bar = Progress(niter, state.iteration, enabled=info.is_main and (
            progress if progress is not None else os.isatty(2)))
        last_val, window_start, window_iters = None, time.perf_counter(), 0
        while state.iteration < niter:
            sampler.set_epoch(state.epoch)
            for position, batch in enumerate(loader, start=1):
                state.iteration += 1
                state.epoch_done = position == len(loader)
                terms = train_step(state, batch, state.iteration)
                window_iters += 1
                it = state.iteration
                if it % log_opt["print_freq"] == 0 and terms is not None:
                    seconds = (time.perf_counter() - window_start) / window_iters
                    log_iteration(state, reduce_terms(terms), seconds, tb, bar)
                    window_start, window_iters = time.perf_counter(), 0
                bar.update()
                if val_set is not None and it % train_opt["val_freq"] == 0:
                    last_val = run_validation(state, val_set, tb)
                if it % log_opt["save_checkpoint_freq"] == 0 or it == niter:
                    save_checkpoint(state)
                where.iteration = it + 1
                if it >= niter:
                    break
            if state.epoch_done:
                state.epoch += 1
        latest = os.path.join(ckpt.models_dir(exp_root), "latest_G.pth")
        identical = replicas_identical(state.model)
        error = None
        if info.is_main:
            try:
                ckpt.save_weights(state.model, latest)
                if state.input_stats is not None:
                    write_sidecar(state.input_stats, latest)
                logger.info("finished at iteration %d; final weights %s", state.iteration, latest)
            except (OSError, RuntimeError) as exc:
                error = _write_failure(exc, exp_root, state.iteration, "the final weights latest_G.pth")
                if error is None:
                    raise
        error = all_gather_object(error)[0]
        if error is not None:
            raise UserError(error)
        return {"iteration": state.iteration, "experiments_root": exp_root, "latest_G": latest, "log_file": log_file,
                "val": last_val, "world_size": info.world_size, "replicas_identical": identical}
    finally:
        if bar is not None:
            bar.close()
        tb.close()
        close_text_log()


def replicas_identical(model: nn.Module) -> bool:
    """Compare a digest of the weights of every rank; logs the answer (always true for one process)."""
    digest = hashlib.sha256()
    for tensor in unwrap(model).state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    digests = all_gather_object(digest.hexdigest())
    same = len(set(digests)) == 1
    if len(digests) > 1:
        if same:
            logger.info("weights identical on all %d ranks", len(digests))
        else:
            logger.warning("weights DIFFER between ranks (%d distinct digests)", len(set(digests)))
    return same


def log_iteration(state: TrainState, values: dict[str, float], seconds: float, tb: TensorBoardLogger,
                  bar: Progress) -> None:
    """Log one line of losses and learning rates to the text log and TensorBoard (rank 0)."""
    if not state.dist.is_main:
        return
    lrs = state.scheduler.get_last_lr()
    scalars = {f"loss/{k}": v for k, v in values.items()}
    scalars["lr"] = lrs[0]
    if len(lrs) > 1:
        scalars["lr_tsa_fusion"] = lrs[-1]
    scalars["time/iteration_s"] = seconds
    tb.scalars(scalars, state.iteration)
    loss_text = " ".join(f"{k}: {v:.4e}" for k, v in values.items())
    lr_text = ",".join(f"{lr:.3e}" for lr in lrs)
    logger.info("<epoch:%3d, iter:%8d, lr:(%s), %.3f s/it> %s", state.epoch, state.iteration, lr_text, seconds,
                loss_text)
    report_offsets(state.model, log=logger)  # warns when a deformable layer's offsets diverged since the last line
    bar.set_loss(values["total"])
