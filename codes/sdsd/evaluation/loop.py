"""The evaluation loop: the engine over every frame of a dataset, each frame handed to consumers.

Both tests and validation during training run this one loop: ``quantitative_test.py`` with a
:class:`~sdsd.evaluation.quantitative.Scorer`, ``qualitative_test.py`` with a
:class:`~sdsd.evaluation.qualitative.FrameWriter`, the trainer's validation with a scorer and a
:class:`~sdsd.evaluation.qualitative.PanelKeeper`.

A consumer's :meth:`~FrameConsumer.take` runs on the loop's thread with each :class:`~sdsd.inference.FrameOutput`
and may return a job (a function of no arguments, e.g. computing metrics or encoding PNGs); jobs run on a small
pool of threads (OpenCV releases the GIL) while the network computes the next window. Each job's result goes
back to its consumer's :meth:`~FrameConsumer.done` on the loop's thread, in frame order.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence

from sdsd.evaluation.common import progress_bar
from sdsd.inference import Engine, FrameOutput, WorkItem, iterate_dataset, plan_work
from sdsd.utils import dist as dist_utils

__all__ = ["FrameConsumer", "LoopStats", "run_frames"]

#: Frames whose jobs may still be running before the loop waits for the oldest (bounds the images held).
MAX_PENDING = 16


class FrameConsumer:
    """Receives every frame the loop computes on this process; subclasses override :meth:`take`."""

    def take(self, out: FrameOutput) -> Callable[[], object] | None:
        """Called on the loop's thread with one frame; returns a job to run on a worker thread, or ``None``.

        Tensors the job needs should be copied to the CPU here: ``out`` is not used after the call.
        """
        raise NotImplementedError

    def done(self, result: object) -> None:
        """Called on the loop's thread with the result of a job :meth:`take` returned, in frame order."""


@dataclasses.dataclass
class LoopStats:
    """What one process's loop did: frames it computed and its wall-clock seconds (network, jobs, reading)."""

    frames: int
    seconds: float


def run_frames(engine: Engine | None, dataset, info: dist_utils.DistInfo, consumers: Sequence[FrameConsumer], *,
               progress: bool = False, workers: int = 2, max_pending: int = MAX_PENDING,
               frames: Callable[[list[WorkItem]], Iterable[FrameOutput]] | None = None) -> LoopStats:
    """Run ``engine`` over this rank's share of ``dataset``'s frames and hand each frame to every consumer.

    Args:
        engine: the network's engine (``None`` when ``frames`` gives the outputs).
        dataset: an evaluation dataset (``scenes``, ``scene_length``, ``load_scene``, ``window``).
        info: this process's rank and world size: the frames are split across ranks by
            :func:`~sdsd.inference.plan_work` (contiguous parts, scene by scene). Nothing is gathered here.
        consumers: called in this order for each frame.
        progress: show a progress bar on rank 0 (a frame counts once all its jobs are done).
        workers: threads running the jobs.
        max_pending: frames whose jobs may be unfinished before the loop waits for the oldest.
        frames: where the outputs come from instead of the engine: called with this rank's work items, yields
            their :class:`~sdsd.inference.FrameOutput` in order (the frames of ``quantitative_test.py
            --predictions``, :func:`sdsd.evaluation.predictions.iterate_predictions`).

    Returns:
        This process's :class:`LoopStats`. A job's exception is raised here, after the jobs not yet started are
        cancelled and the running ones have finished.
    """
    work = plan_work([(s, dataset.scene_length(s)) for s in dataset.scenes], info.rank, info.world_size)
    start = time.perf_counter()
    count = 0
    bar = progress_bar(sum(len(w.indices) for w in work), progress and info.is_main)
    pending: collections.deque[list[tuple[FrameConsumer, cf.Future]]] = collections.deque()

    def finish_oldest() -> None:
        for consumer, future in pending.popleft():
            consumer.done(future.result())
        bar.update(1)

    try:
        with cf.ThreadPoolExecutor(max_workers=workers) as pool:
            try:
                outputs = iterate_dataset(engine, dataset, work) if frames is None else frames(work)
                for out in outputs:
                    jobs = []
                    for consumer in consumers:
                        job = consumer.take(out)
                        if job is not None:
                            jobs.append((consumer, pool.submit(job)))
                    pending.append(jobs)
                    count += 1
                    while pending and (len(pending) > max_pending or all(f.done() for _, f in pending[0])):
                        finish_oldest()
                while pending:
                    finish_oldest()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        bar.close()
    return LoopStats(count, time.perf_counter() - start)
