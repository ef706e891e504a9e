"""Reading one video frame exactly as the published SDSD pipeline does.

A frame is decoded to an ``H x W x C`` uint8 array in OpenCV's **BGR** order: ``.npy`` files with
``np.load``, everything else with ``cv2.imread(path, cv2.IMREAD_UNCHANGED)``, and paths that run through a
``*.lmdb`` folder (``/data/GT.lmdb/pair1/0001.npy``) from that LMDB (see :mod:`sdsd.data.lmdb_backend`).

When ``train_size = [W, H]`` is set the **uint8** frame is resized with ``cv2.resize(img, (W, H))``
(default bilinear) before the float conversion: the reference resizes the decoded array first, and on
frames whose size differs from ``train_size`` (SMID) the order changes the numbers. Then the frame becomes
``float32 / 255``, a 4-channel frame keeps its first 3 channels, a 1-channel (2-D) frame is repeated to 3
channels (the reference would crash on it), and the channels are reversed to RGB.

Only 8-bit frames are accepted: dividing a 16-bit frame by 255 (as the reference would) silently gives
values far above 1, so it is refused with a :class:`~sdsd.errors.UserError` instead.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from sdsd.data import lmdb_backend
from sdsd.errors import UserError

__all__ = [
    "decode_frame",
    "prepare_uint8",
    "uint8_to_rgb_float",
    "read_frame",
    "to_tensor",
    "frames_to_tensor",
    "npy_memmap",
]

_FIX_HINT = "re-create or re-download it"


def _check_decoded(img: np.ndarray, path: str) -> np.ndarray:
    """Validate dtype and layout of a decoded frame; return it as ``H x W x C`` (C in 1, 3, 4)."""
    if img.dtype != np.uint8:
        raise UserError(f"frame {path} has dtype {img.dtype}; only 8-bit (uint8) frames are supported, convert it")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4) or img.shape[0] == 0 or img.shape[1] == 0:
        raise UserError(f"frame {path} has shape {tuple(img.shape)}; expected H x W x 3 (BGR), H x W x 4 or H x W")
    return img


def decode_frame(path: str) -> np.ndarray:
    """Decode a frame file (or LMDB entry) to its stored ``H x W x C`` uint8 BGR array, unchanged.

    Args:
        path: a ``.npy`` file, an image file OpenCV can read, or ``<root>.lmdb/<key>``.

    Returns:
        The array, 3-D; a 2-D frame gets a channel axis of size 1.

    Raises:
        UserError: the file is missing, unreadable, truncated, corrupt or not 8-bit; the message names it.
    """
    path = os.fspath(path)
    split = lmdb_backend.split_lmdb_path(path)
    if split is not None:
        return _check_decoded(lmdb_backend.read_raw(*split), path)
    if not os.path.isfile(path):
        raise UserError(f"frame {path} does not exist")
    if path.lower().endswith(".npy"):
        try:
            img = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise UserError(f"frame {path} is corrupt or truncated ({exc}); {_FIX_HINT}") from None
        if not isinstance(img, np.ndarray):
            raise UserError(f"frame {path} does not hold a single array; {_FIX_HINT}")
    else:
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if img is None:
            raise UserError(f"frame {path} cannot be decoded as an image (corrupt, truncated or unknown format)")
    return _check_decoded(img, path)


def npy_memmap(path: str) -> np.ndarray:
    """Open a ``.npy`` frame memory-mapped, so that a crop reads only the rows it needs.

    Raises:
        UserError: the file is corrupt, truncated or not an 8-bit frame.
    """
    try:
        img = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"frame {path} does not exist") from None
    except (ValueError, OSError, EOFError) as exc:
        raise UserError(f"frame {path} is corrupt or truncated ({exc}); {_FIX_HINT}") from None
    return _check_decoded(img, path)


def prepare_uint8(img: np.ndarray, train_size: Sequence[int] | None) -> np.ndarray:
    """Resize a decoded uint8 frame to ``train_size = [W, H]`` (no-op when None or already that size).

    ``cv2.resize`` copies unchanged when the size already matches, so skipping it is bit-identical.
    """
    if train_size is None:
        return img
    width, height = int(train_size[0]), int(train_size[1])
    if img.shape[0] == height and img.shape[1] == width:
        return img
    out = cv2.resize(np.ascontiguousarray(img), (width, height))
    if out.ndim == 2:  # cv2 drops a size-1 channel axis
        out = out[:, :, None]
    return out


def three_channels(img: np.ndarray) -> np.ndarray:
    """Keep the first 3 channels of a 4-channel frame; repeat a 1-channel frame to 3 (a view when possible)."""
    channels = img.shape[-1]
    if channels == 3:
        return img
    if channels == 1:
        return np.repeat(img, 3, axis=-1)
    return img[..., :3]


def uint8_to_rgb_float(img: np.ndarray) -> np.ndarray:
    """``H x W x C`` uint8 BGR -> contiguous ``H x W x 3`` float32 RGB in [0, 1] (``float32 / 255``)."""
    rgb = three_channels(img)[..., ::-1]
    out = rgb.astype(np.float32)
    out /= np.float32(255.0)
    return out


def read_frame(path: str, train_size: Sequence[int] | None = None) -> np.ndarray:
    """Read one frame the way the published pipeline does.

    Args:
        path: ``.npy`` (uint8 BGR), an image file, or ``<root>.lmdb/<key>``.
        train_size: optional ``[W, H]``; the frame is resized to it with ``cv2.resize`` (bilinear).

    Returns:
        ``H x W x 3`` float32 RGB array in [0, 1], C-contiguous.

    Raises:
        UserError: the frame is missing, unreadable, corrupt or not 8-bit (the message names the file).
    """
    return uint8_to_rgb_float(prepare_uint8(decode_frame(path), train_size))


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """``H x W x 3`` array -> contiguous float32 ``3 x H x W`` tensor (values unchanged)."""
    return torch.from_numpy(np.ascontiguousarray(np.transpose(img, (2, 0, 1)), dtype=np.float32))


def frames_to_tensor(imgs: Sequence[np.ndarray]) -> torch.Tensor:
    """A list of ``H x W x 3`` arrays -> contiguous float32 ``T x 3 x H x W`` tensor."""
    stacked = np.stack(list(imgs), axis=0)
    return torch.from_numpy(np.ascontiguousarray(np.transpose(stacked, (0, 3, 1, 2)), dtype=np.float32))
