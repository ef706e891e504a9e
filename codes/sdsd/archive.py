"""The bookkeeping of a whole-archive ``sdsd.enhance`` job: its inputs and outputs, the paths it may not touch, the
completion record of each output, the work queue shared by the processes of a ``torchrun`` job, and its summary.

**Who does what.** Processes never wait for one another. Each takes the next input from a counter in the
``torchrun`` rendezvous store (an atomic ``add``), so a long file occupies one process while the others go on
through the rest; it records each result as it goes (in the store, and on disk as the output's completion record),
and the process that finishes last writes ``summary.json``. A single process counts on its own.

**Finished means finished by this job.** Each output ``<name>`` of the output folder has a completion record
``.sdsd-archive/<name>.json`` beside it: the input's identity (resolved path, size, modification time), the job's
key (the checkpoint's SHA-256 and every setting that changes pixels) and the output's own size and modification
time. A rerun skips an output only when all of these still match; an output this program wrote under other
settings (another model, a ``--max-frames`` preview, ...) is redone; a file at an output's name that this program
did not write, or that was changed after it wrote it, is refused for that input (one line; the others go on).

**Exit status** (:data:`EXIT_CODES`): 0 every input done or already finished; 3 some inputs failed (each listed in
the summary); 2 a usage error (nothing was done); 130 interrupted; 1 an unexpected error (a traceback). Under
``torchrun`` every worker exits 0 when its only failures are recorded input failures (a non-zero worker makes
``torchrun`` report a crash and stop the others): read ``failed`` in ``summary.json``.
"""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta

from sdsd.errors import UserError

__all__ = ["EXIT_CODES", "EXIT_FAILED_INPUTS", "RECORD_FOLDER", "SUMMARY", "WorkQueue", "archive_inputs",
           "archive_outputs", "check_archive_paths", "check_paths", "format_summary", "input_identity", "job_key",
           "read_record", "recognise", "write_record"]

EXIT_FAILED_INPUTS = 3
EXIT_CODES = {0: "every input done or already finished", 1: "an unexpected error (with a traceback)",
              2: "a usage error: nothing was done", EXIT_FAILED_INPUTS: "some inputs failed (listed in summary.json)",
              130: "interrupted (Ctrl-C or SIGTERM)"}
RECORD_FOLDER = ".sdsd-archive"
SUMMARY = "summary.json"
RECORD_FORMAT = 1
MAX_LIST_BYTES = 64 * 2**20


# -- inputs and outputs ---------------------------------------------------------------------------------------------


def _read_list(path: str) -> list[str]:
    try:
        if os.path.getsize(path) > MAX_LIST_BYTES:
            raise UserError(f"{path}: the list is larger than {MAX_LIST_BYTES // 2**20} MiB; is it a list of paths?")
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the list ({exc.strerror or exc}); check the path") from None
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark is not part of the first path
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: the list is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                        "save it as UTF-8") from None
    if "\x00" in text:
        raise UserError(f"{path}: the list holds a NUL byte; it must be text, one path per line")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def archive_inputs(inputs: list[str]) -> list[str] | None:
    """The files of an archive job, or ``None`` for a single input.

    An archive is several inputs, one folder holding videos (its video files, sorted; a folder of frames is a
    single input), or one ``.txt`` file listing paths (UTF-8, one per line; blank lines and ``#`` comments skipped;
    relative paths are relative to the list file).

    Raises:
        UserError: an empty or unreadable list, a listed path that does not exist, or an input that is not a
            regular file or folder (a FIFO, socket or device would block the run).
    """
    from sdsd.video import FRAME_EXTS, is_video_path

    if len(inputs) == 1:
        path = inputs[0]
        if os.path.isfile(path) and path.lower().endswith(".txt"):
            base = os.path.dirname(os.path.abspath(path))
            files = [ln if os.path.isabs(ln) else os.path.join(base, ln) for ln in _read_list(path)]
            if not files:
                raise UserError(f"{path}: the list names no input; write one video path per line")
        elif os.path.isdir(path):
            names = sorted(os.listdir(path))
            if any(n.lower().endswith(FRAME_EXTS) for n in names):
                return None  # a folder of frames
            files = [os.path.join(path, n) for n in names if is_video_path(n) and not n.startswith(".")]
            if not files:
                return None  # let the reader say what is wrong with the folder
        else:
            return None
    else:
        files = list(inputs)
    missing = [f for f in files if not os.path.exists(f)]
    if missing:
        raise UserError(f"input {missing[0]} does not exist ({len(missing)} missing); fix the path or the list")
    odd = [f for f in files if not (os.path.isfile(f) or os.path.isdir(f))]
    if odd:
        raise UserError(f"input {odd[0]} is not a regular file or folder (a FIFO, socket or device); "
                        "give video files or frame folders")
    return files


def archive_outputs(files: list[str], folder: str) -> list[str]:
    """One output video per input in ``folder``: ``<name>.mp4`` (the input's extension when it is a video one).

    Raises:
        UserError: ``folder`` is a video path or a file, or two inputs would write the same output.
    """
    from sdsd.video import is_video_path

    if is_video_path(folder) or os.path.isfile(folder):
        raise UserError(f"-o {folder}: several inputs need an output folder (one video per input), not a file")
    outputs = []
    for path in files:
        stem, ext = os.path.splitext(os.path.basename(os.path.normpath(path)))
        outputs.append(os.path.join(folder, stem + (ext if is_video_path(path) else ".mp4")))
    seen: dict[str, str] = {}
    for path, out in zip(files, outputs):
        if out in seen:
            raise UserError(f"inputs {seen[out]} and {path} would both write {out}; rename one of them")
        seen[out] = path
    return outputs


def _within(path: str, folder: str) -> bool:
    """True when the resolved ``path`` is ``folder`` or lies inside it (both resolved through links)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _same(a: str, b: str) -> bool:
    if os.path.exists(a) and os.path.exists(b):
        try:
            return os.path.samefile(a, b)
        except OSError:
            pass
    return os.path.realpath(a) == os.path.realpath(b)


def check_paths(input_path: str, output_path: str) -> None:
    """Refuse an output that would overwrite or replace its own input, however it is named.

    Identities are compared, not spellings: through symbolic links (resolved paths) and hard links
    (``os.path.samefile``). A frame-folder output must not be the input folder or lie inside it, and an output
    folder (replaced whole) must not hold the input.

    Raises:
        UserError: the output is, lies inside, or holds the input.
    """
    if _same(input_path, output_path):
        raise UserError(f"output {output_path} is the input {input_path}; choose another output path")
    if os.path.isdir(input_path) and _within(output_path, input_path):
        raise UserError(f"output {output_path} lies inside the input folder {input_path}; choose a path outside it")
    if os.path.isdir(output_path) and _within(input_path, output_path):
        raise UserError(f"output folder {output_path} holds the input {input_path} and would be replaced; "
                        "choose another output path")


def check_archive_paths(given: list[str], files: list[str], outputs: list[str], folder: str) -> None:
    """Refuse an archive whose output folder is, or lies inside, an input folder, or whose outputs are inputs.

    Args:
        given: the inputs as the user gave them (folders, a list file, files).
        files, outputs: the archive's inputs and their outputs (:func:`archive_inputs`, :func:`archive_outputs`).
        folder: the output folder.
    """
    for path in given:
        if os.path.isdir(path) and _within(folder, path):
            raise UserError(f"-o {folder} is or lies inside the input folder {path}; the outputs and summary.json "
                            "would be written among the inputs: choose a folder outside it")
    for path, out in zip(files, outputs):
        if _same(path, out):
            raise UserError(f"input {path} would be overwritten by its own output {out}; choose another -o")
        if os.path.isdir(path) and _within(folder, path):
            raise UserError(f"-o {folder} lies inside the input folder {path}; choose a folder outside it")
    summary = os.path.join(folder, SUMMARY)
    if os.path.lexists(summary) and not _is_summary(summary):
        raise UserError(f"{summary} exists and is not an archive summary of sdsd.enhance; move it away or choose "
                        "another -o")


def _is_summary(path: str) -> bool:
    from sdsd.utils.io import read_json

    try:
        data = read_json(path, 64 * 2**20)
    except (OSError, ValueError):  # missing, or a JSONFileProblem
        return False
    return isinstance(data, dict) and isinstance(data.get("files"), list) and "failed" in data


# -- completion records ---------------------------------------------------------------------------------------------


def input_identity(path: str) -> dict:
    """What identifies an input across runs without reading it whole: resolved path, size, modification time (for
    a frame folder, of its newest entry and its entry count)."""
    real = os.path.realpath(path)
    st = os.stat(real)
    ident = {"path": real, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if os.path.isdir(real):
        names = [n for n in os.listdir(real) if not n.startswith(".")]
        ident["size"] = len(names)
        ident["mtime_ns"] = max([st.st_mtime_ns] + [os.stat(os.path.join(real, n)).st_mtime_ns for n in names])
    return ident


#: The settings of ``sdsd.enhance`` that change an output's pixels, frames or streams (not its speed).
PIXEL_SETTINGS = ("exposure_target", "padding", "self_ensemble", "tile", "tile_overlap", "max_frames", "compare",
                  "fps", "crf", "codec", "bit_depth", "colorspace", "color_range", "no_audio", "runtime",
                  "precision", "amp")


def job_key(args, checkpoint: str) -> dict:
    """The part of a completion record that must match for an output to count as finished by this job."""
    from sdsd.utils.io import file_sha256

    key = {"checkpoint_sha256": file_sha256(checkpoint)}
    opt = getattr(args, "opt", None)
    if isinstance(opt, dict):
        key["network_G"] = json.loads(json.dumps(opt.get("network_G"), sort_keys=True, default=str))
    for name in PIXEL_SETTINGS:
        value = getattr(args, name, None)
        key[name] = round(value, 9) if isinstance(value, float) else value
    return key


def record_path(output: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(output)), RECORD_FOLDER, os.path.basename(output) + ".json")


def read_record(output: str) -> dict | None:
    """The completion record of ``output``, or ``None`` when it has none (or an unreadable one)."""
    path = record_path(output)
    from sdsd.utils.io import read_json

    try:
        data = read_json(path, 2**20, follow_links=False)
    except (OSError, ValueError):  # missing, or a JSONFileProblem
        return None
    return data if isinstance(data, dict) and data.get("format") == RECORD_FORMAT else None


def write_record(output: str, state: str, identity: dict, key: dict, frames: int | None = None) -> None:
    """Write ``output``'s completion record atomically: ``pending`` before its encoding starts, ``done`` (with the
    frame count and the output's size and modification time) once the output is in place."""
    from sdsd.utils.io import atomic_write_json, make_folder

    record = {"format": RECORD_FORMAT, "state": state, "input": identity, "job": key, "frames": frames,
              "pid": os.getpid(), "rank": int(os.environ.get("RANK", "0")), "time": time.time()}
    if state == "done":
        st = os.stat(output)
        record["output"] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    make_folder(os.path.dirname(record_path(output)))
    atomic_write_json(record, record_path(output), default=str)


def recognise(output: str, identity: dict, key: dict) -> tuple[str, str]:
    """What to do with ``output`` before enhancing into it: ``("make", why)``, ``("skip", why)`` or
    ``("refuse", why)`` (the reason is one line)."""
    if not os.path.lexists(output):
        return "make", ""
    name = os.path.basename(output)
    if os.path.islink(output) or not os.path.isfile(output):
        return "refuse", (f"{output} exists and is not a regular file; remove it or choose another -o")
    record = read_record(output)
    if record is None:
        return "refuse", (f"{output} exists and was not written by this archive job (no completion record in "
                          f"{RECORD_FOLDER}/); remove it or choose another -o")
    st = os.stat(output)
    if record.get("state") == "done":
        made = record.get("output") or {}
        if made.get("size") != st.st_size or made.get("mtime_ns") != st.st_mtime_ns:
            return "refuse", (f"{output} was changed after sdsd.enhance wrote it; remove it or choose another -o")
        if record.get("job") == key and record.get("input") == identity:
            return "skip", "finished earlier by this job"
        what = "the input changed" if record.get("input") != identity else _difference(record.get("job"), key)
        return "make", f"redoing {name}: it was made with {what}"
    return "make", f"redoing {name}: an earlier run did not finish it"


def _difference(old, new: dict) -> str:
    if not isinstance(old, dict):
        return "other settings"
    if old.get("checkpoint_sha256") != new.get("checkpoint_sha256"):
        return "another checkpoint"
    names = [k for k in new if old.get(k) != new.get(k)]
    return "other settings (" + ", ".join(f"--{k.replace('_', '-')}" for k in names[:4]) + ")" if names else \
        "other settings"


# -- the work queue -------------------------------------------------------------------------------------------------


class WorkQueue:
    """Hands out input indices ``0, 1, ...`` to the processes of a job, each index to exactly one of them.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) it is a counter in the job's rendezvous store (``torchrun``'s agent
    store, or rank 0's when launched by hand), so no process ever waits for another; results are posted to the
    store as they come, and :meth:`finish` tells the last process to finish that it is the last. Alone, it counts
    locally.
    """

    def __init__(self, total: int):
        self.total = total
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self._next = 0
        self._rows: dict[int, dict] = {}
        self.store = None
        self._hosts_store = False
        if self.world > 1:
            import torch.distributed as dist

            from sdsd.utils.dist import collective_timeout_s

            store, _, _ = next(dist.rendezvous("env://", self.rank, self.world,
                                               timeout=timedelta(seconds=collective_timeout_s())))
            agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
            self._hosts_store = self.rank == 0 and not agent
            run = f"{os.environ.get('TORCHELASTIC_RUN_ID', 'none')}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', 0)}"
            self.store = dist.PrefixStore(f"sdsd-archive/{run}/", store)

    def next(self) -> int | None:
        """The next input index for this process, or ``None`` when every input has been handed out."""
        if self.store is None:
            k, self._next = self._next, self._next + 1
        else:
            k = self.store.add("next", 1) - 1
        return k if k < self.total else None

    def post(self, k: int, row: dict) -> None:
        """Record input ``k``'s result where the summary's writer will find it."""
        self._rows[k] = row
        if self.store is not None:
            self.store.set(f"row/{k}", json.dumps(row, default=str))

    def finish(self) -> list[dict] | None:
        """Say this process is done; the last one gets every row (in input order), the others ``None``."""
        if self.store is None:
            return [self._rows[k] for k in sorted(self._rows)]
        last = self.store.add("finished", 1) == self.world
        rows = [json.loads(self.store.get(f"row/{k}")) for k in range(self.total)] if last else None
        if self._hosts_store:  # the others' requests go to this process: stay until they are done
            while self.store.add("finished", 0) < self.world:
                time.sleep(0.2)
        return rows


def format_summary(rows: list[dict]) -> str:
    """The archive summary: one line per file (status, frames, seconds, runtime or reason) and the totals."""
    width = max([len("input")] + [len(os.path.basename(r["input"])) for r in rows])
    lines = [f"{'input':<{width}}  {'status':<7}  {'frames':>6}  {'seconds':>8}  runtime"]
    for r in rows:
        frames = "" if r["frames"] is None else str(r["frames"])
        seconds = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
        runtime = f"{r['runtime']} {r['precision']}" if r["runtime"] else (r["error"] or "")
        lines.append(f"{os.path.basename(r['input']):<{width}}  {r['status']:<7}  {frames:>6}  {seconds:>8}  "
                     f"{runtime}")
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "skipped", "failed")}
    lines.append(f"{len(rows)} inputs: {counts['done']} done, {counts['skipped']} skipped (finished earlier), "
                 f"{counts['failed']} failed")
    return "\n".join(lines)
