"""Pack one SDSD/SMID dataset root (a folder of scene folders) into an LMDB.

Usage::

    python -m sdsd.tools.make_lmdb dataset/indoor_np/GT dataset/indoor_np/GT.lmdb
    python -m sdsd.tools.make_lmdb dataset/indoor_np/input dataset/indoor_np/input.lmdb

Then point ``dataroot_GT`` / ``dataroot_LQ`` at the ``.lmdb`` folders; the datasets give the same tensors.
Keys are ``<scene>/<frame file name>`` (e.g. ``pair1/0001.npy``); each value holds the frame's raw uint8 BGR
pixels as decoded from the source file plus its shape; ``__meta__`` (JSON: format, source, scenes, frame lists,
per-scene shape of the first frame) is written last. See :mod:`sdsd.data.lmdb_backend` for the format.

The conversion is resumable: run the same command again after an interruption and frames already stored are
skipped. An LMDB without ``__meta__`` is unfinished and is refused by the datasets.
"""

from __future__ import annotations

import argparse
import glob
import json
import os

from sdsd.errors import UserError, cli_main

_COMMIT_EVERY = 64


def scan_source(src: str) -> dict[str, list[str]]:
    """Return ``{scene: [frame file names, sorted]}`` for a root of scene folders.

    Raises:
        UserError: the folder is missing, holds no scene folders, or a scene folder holds no frames.
    """
    if not os.path.isdir(src):
        raise UserError(f"source folder {src} does not exist; give a root of scene folders such as indoor_np/GT")
    scenes = sorted(os.path.basename(p) for p in glob.glob(os.path.join(src, "*")) if os.path.isdir(p))
    if not scenes:
        raise UserError(f"source folder {src} holds no scene folders; give a root such as indoor_np/GT")
    frames = {}
    for scene in scenes:
        names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(src, scene, "*")) if os.path.isfile(p))
        if not names:
            raise UserError(f"scene folder {os.path.join(src, scene)} holds no frames; remove it or add its frames")
        frames[scene] = names
    return frames


def make_lmdb(src: str, dst: str, *, progress: bool = True) -> dict:
    """Write (or finish) the LMDB ``dst`` from the scene folders under ``src``.

    Args:
        src: root of scene folders (e.g. ``indoor_np/GT``).
        dst: output folder; must end with ``.lmdb``.
        progress: show a tqdm progress bar.

    Returns:
        The ``__meta__`` record written.

    Raises:
        UserError: bad paths, an unreadable frame (named), or a destination that is not such an LMDB.
    """
    import lmdb
    from tqdm import tqdm

    from sdsd.data import lmdb_backend  # (with PyTorch: imported here, after the command line is parsed)
    from sdsd.data.frames import decode_frame

    src = os.path.abspath(os.path.expanduser(src))
    dst = os.path.abspath(os.path.expanduser(dst)).rstrip("/\\")
    if not dst.endswith(".lmdb"):
        raise UserError(f"destination {dst} must end with .lmdb (the datasets recognise LMDB roots by that suffix)")
    if os.path.exists(dst) and not os.path.isdir(dst):
        raise UserError(f"destination {dst} exists and is not a folder; choose another name")
    if os.path.isdir(dst) and os.listdir(dst) and not os.path.exists(os.path.join(dst, "data.mdb")):
        raise UserError(f"destination {dst} is a non-empty folder that is not an LMDB; choose another name")
    frames = scan_source(src)
    total_bytes = sum(os.path.getsize(os.path.join(src, s, n)) for s, names in frames.items() for n in names)
    # Compressed images can decode to many times their size; the map also grows on demand below.
    map_size = max(1 << 30, 4 * total_bytes + (64 << 20))
    if os.path.exists(os.path.join(dst, "data.mdb")):
        map_size = max(map_size, 2 * os.path.getsize(os.path.join(dst, "data.mdb")))
    os.makedirs(dst, exist_ok=True)
    env = lmdb.open(dst, map_size=map_size, subdir=True, meminit=False, map_async=True)
    try:
        shapes: dict[str, list[int]] = {}
        keys = [(scene, name) for scene, names in frames.items() for name in names]
        pending: list[tuple[bytes, bytes]] = []
        skipped = 0
        present = _stored_keys(env, keys)
        for scene, name in tqdm(keys, desc=f"lmdb {os.path.basename(dst)}", unit="frame", disable=not progress):
            key = f"{scene}/{name}"
            if key in present:
                skipped += 1
                shapes.setdefault(scene, present[key])
                continue
            img = decode_frame(os.path.join(src, scene, name))
            shapes.setdefault(scene, list(img.shape))
            pending.append((key.encode(), lmdb_backend.encode_frame(img)))
            if len(pending) >= _COMMIT_EVERY:
                _put_all(env, pending)
                pending = []
        _put_all(env, pending)
        meta = {
            "format": lmdb_backend.META_FORMAT,
            "source": src,
            "scenes": list(frames),
            "frames": frames,
            "shapes": shapes,
        }
        _put_all(env, [(lmdb_backend.META_KEY, json.dumps(meta).encode("utf-8"))])
        env.sync(True)
    finally:
        env.close()
    if progress and skipped:
        print(f"resumed: {skipped} frames were already stored")
    return meta


def _stored_keys(env, keys: list[tuple[str, str]]) -> dict[str, list[int]]:
    """Keys already stored with a valid value (a resumed run skips them), with their frame shapes."""
    from sdsd.data import lmdb_backend

    present = {}
    with env.begin(write=False) as txn:
        for scene, name in keys:
            key = f"{scene}/{name}"
            buf = txn.get(key.encode())
            if buf is None:
                continue
            try:
                present[key] = list(lmdb_backend.decode_value(buf, key).shape)
            except UserError:
                continue  # a damaged entry is simply written again
    return present


def _put_all(env, items: list[tuple[bytes, bytes]]) -> None:
    """Write ``items`` in one transaction, doubling the map size when the LMDB is full."""
    import lmdb

    if not items:
        return
    while True:
        try:
            with env.begin(write=True) as txn:
                for key, value in items:
                    txn.put(key, value)
            return
        except lmdb.MapFullError:
            env.set_mapsize(env.info()["map_size"] * 2)


@cli_main
def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m sdsd.tools.make_lmdb", description=__doc__.split("\n")[0])
    parser.add_argument("src", help="root of scene folders, e.g. dataset/indoor_np/GT")
    parser.add_argument("dst", help="output LMDB folder ending in .lmdb, e.g. dataset/indoor_np/GT.lmdb")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    meta = make_lmdb(args.src, args.dst, progress=not args.quiet)
    count = sum(len(v) for v in meta["frames"].values())
    print(f"wrote {args.dst}: {len(meta['scenes'])} scenes, {count} frames")


if __name__ == "__main__":
    main()
