"""``python -m bench``: run the benchmarks, print one table, write ``bench/results.json``.

Benchmarks (each a module with ``run(quick: bool = False) -> dict``, imported only when it runs; one that is
missing or fails is reported as skipped and the others still run):

* ``network``: SDSD-Net forward at 512x960 (fp32 NCHW / channels_last, bf16), reference-style baseline,
  streaming with feature reuse, matmul peak, per-kernel and per-stage GFLOP/s (:mod:`bench.network_speed`);
* ``dcn``: our deformable conv against torchvision's (:mod:`bench.dcn_speed`);
* ``train``: training iterations/s at the published 128x128 crop (:mod:`bench.train_speed`);
* ``data``: training data-loader throughput (:mod:`bench.data_speed`);
* ``enhance``: streaming enhancement speed and memory (:mod:`bench.enhance_speed`);
* ``runtimes``: seconds per output frame of every runtime and precision (PyTorch, OpenVINO, ONNX Runtime) against
  the reference-style forward, and what ``sdsd.enhance`` picks (:mod:`bench.runtime_speed`).
* ``real``: a trained model (``make demo``'s) on real footage it never saw, darkened to several exposures with two
  camera models, against the best global brightening, with and without ``--exposure auto``
  (:mod:`bench.real_footage`).

Usage: ``python -m bench [--quick] [--only network,dcn] [--tiny] [--out PATH]`` (also ``make bench``).
The machine's load average is recorded: on a shared machine absolute times vary, ratios within a run hold.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
import traceback

BENCHES = {
    "network": "bench.network_speed",
    "dcn": "bench.dcn_speed",
    "train": "bench.train_speed",
    "data": "bench.data_speed",
    "enhance": "bench.enhance_speed",
    "runtimes": "bench.runtime_speed",
    "real": "bench.real_footage",
}
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.json")


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _call(name: str, quick: bool, tiny: bool) -> dict:
    module = importlib.import_module(BENCHES[name])
    if name in ("network", "runtimes"):
        return module.run(quick=quick, tiny=tiny)
    if name == "train":
        import torch

        if not torch.cuda.is_available() and not quick:
            # Batch 32 at 128x128 takes minutes per iteration on a small CPU; keep the published crop and
            # report per-window throughput from a smaller batch.
            return module.run(quick=False, batch=4, iters=2)
    return module.run(quick=quick)


def _flatten(prefix: str, value, rows: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, rows)
    elif isinstance(value, float):
        rows.append((prefix, f"{value:.4g}"))
    else:
        rows.append((prefix, str(value)))


def _rows(name: str, result: dict) -> list[tuple[str, str]]:
    if "skipped" in result:
        return [(name, f"skipped: {result['skipped']}")]
    if name == "network":
        from bench.network_speed import summary_rows

        return summary_rows(result)
    if name == "runtimes":
        from bench.runtime_speed import summary_rows as runtime_rows

        return runtime_rows(result)
    rows: list[tuple[str, str]] = []
    _flatten("", {k: v for k, v in result.items() if k != "seconds_total"}, rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (a minute or two)")
    parser.add_argument("--only", action="append", default=None, metavar="NAME",
                        help=f"run only these benchmarks (comma-separated or repeated): {', '.join(BENCHES)}")
    parser.add_argument("--tiny", action="store_true", help="tiny network for the network bench (smoke test)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="where to write the JSON results (default: %(default)s)")
    args = parser.parse_args(argv)

    names = list(BENCHES)
    if args.only:
        names = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
        unknown = [n for n in names if n not in BENCHES]
        if unknown:
            print(f"error: unknown benchmark {unknown[0]!r} in --only; choose from {', '.join(BENCHES)}",
                  file=sys.stderr)
            return 2

    import torch

    from sdsd.utils.io import atomic_write_json, remove_stale_temps
    from sdsd.utils.text import first_line

    remove_stale_temps(os.path.dirname(os.path.abspath(args.out)))  # results files of an interrupted run
    results: dict = {
        "meta": {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": args.quick, "tiny": args.tiny,
                 "torch": torch.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
                 "threads": torch.get_num_threads(), "cuda": torch.cuda.get_device_name(0)
                 if torch.cuda.is_available() else None, "load_average_start": _load_average()},
    }
    for name in names:
        start = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            result = _call(name, args.quick, args.tiny)
        except ModuleNotFoundError as exc:
            if exc.name and BENCHES[name].startswith(exc.name):
                result = {"skipped": f"{BENCHES[name]} is not there"}
            else:
                result = {"skipped": f"{type(exc).__name__}: {exc}"}
        except Exception as exc:  # noqa: BLE001 - one failing benchmark must not hide the others
            last = traceback.extract_tb(exc.__traceback__)[-1]
            result = {"skipped": f"{type(exc).__name__}: {first_line(exc, empty='')} "
                                 f"({os.path.basename(last.filename)}:{last.lineno})"}
        result["seconds_total"] = round(time.perf_counter() - start, 1)
        results[name] = result
        # Written after every benchmark so that an interrupted run keeps what it measured.
        results["meta"]["load_average_end"] = _load_average()
        atomic_write_json(results, args.out, indent=1, default=str)
    results["meta"]["load_average_end"] = _load_average()
    atomic_write_json(results, args.out, indent=1, default=str)

    width = max([len(label) for name in names for label, _ in _rows(name, results[name])] + [10])
    print(f"{'benchmark':<{width}}  result")
    for name in names:
        print(f"-- {name} ({results[name]['seconds_total']} s) " + "-" * max(0, width - len(name) - 10))
        for label, value in _rows(name, results[name]):
            print(f"{label:<{width}}  {value}")
    print(f"load average: start {results['meta']['load_average_start']}, end {results['meta']['load_average_end']}"
          f"  (2-minute figures above ~{os.cpu_count()} mean the timings are shared)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
