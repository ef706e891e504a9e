"""Frame reading: bit-identical to the published read path (docs/protocol.md#frames) and clear errors for bad frames."""

import cv2
import numpy as np
import pytest
import torch

from sdsd.data.frames import frames_to_tensor, read_frame, to_tensor
from sdsd.errors import UserError


def spec_read(path, train_size=None):
    """docs/protocol.md#frames written out literally: decode, resize the decoded array, /255, fix channels, RGB."""
    img = np.load(path) if str(path).endswith(".npy") else cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if train_size is not None:
        img = cv2.resize(img, (train_size[0], train_size[1]))
    img = img.astype(np.float32) / 255.0
    if img.ndim == 2:
        img = np.expand_dims(img, axis=2)
    if img.shape[2] > 3:
        img = img[:, :, :3]
    return img[:, :, [2, 1, 0]]


@pytest.fixture
def bgr():
    return np.random.default_rng(1).integers(0, 256, (32, 48, 3), dtype=np.uint8)


@pytest.mark.parametrize("train_size", [None, [48, 32], [40, 24], [64, 48]])
def test_npy_matches_spec(tmp_path, bgr, train_size):
    path = tmp_path / "f.npy"
    np.save(path, bgr)
    out = read_frame(str(path), train_size)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    want_h, want_w = (32, 48) if train_size is None else (train_size[1], train_size[0])
    assert out.shape == (want_h, want_w, 3)
    np.testing.assert_array_equal(out, spec_read(path, train_size))


def test_npy_is_bgr(tmp_path):
    img = np.zeros((4, 4, 3), np.uint8)
    img[..., 0] = 255  # blue in OpenCV order
    np.save(tmp_path / "b.npy", img)
    out = read_frame(str(tmp_path / "b.npy"))
    assert out[..., 2].min() == 1.0 and out[..., :2].max() == 0.0


@pytest.mark.parametrize("ext", ["png", "jpg"])
@pytest.mark.parametrize("train_size", [None, [40, 24]])
def test_image_files_match_spec(tmp_path, bgr, ext, train_size):
    path = tmp_path / f"f.{ext}"
    assert cv2.imwrite(str(path), bgr)
    np.testing.assert_array_equal(read_frame(str(path), train_size), spec_read(path, train_size))


def test_four_channel_keeps_first_three(tmp_path, bgr):
    bgra = np.concatenate([bgr, np.full((32, 48, 1), 7, np.uint8)], axis=2)
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    np.save(tmp_path / "a.npy", bgra)
    for path in (tmp_path / "a.png", tmp_path / "a.npy"):
        out = read_frame(str(path), [40, 24])
        np.testing.assert_array_equal(out, spec_read(path, [40, 24]))


def test_gray_frame_gets_three_equal_channels(tmp_path, bgr):
    gray = bgr[..., 0]
    np.save(tmp_path / "g.npy", gray)
    out = read_frame(str(tmp_path / "g.npy"))
    assert out.shape == (32, 48, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray.astype(np.float32) / 255.0)


def test_truncated_npy_names_file(tmp_path, bgr):
    path = tmp_path / "cut.npy"
    np.save(path, bgr)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cut.npy"):
        read_frame(str(path))


def test_garbage_png_names_file(tmp_path):
    path = tmp_path / "bad.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(UserError, match="bad.png.*cannot be decoded"):
        read_frame(str(path))


def test_missing_frame_names_file(tmp_path):
    with pytest.raises(UserError, match="nothere.npy.*does not exist"):
        read_frame(str(tmp_path / "nothere.npy"))


def test_non_uint8_refused(tmp_path, bgr):
    np.save(tmp_path / "f.npy", bgr.astype(np.float32))
    with pytest.raises(UserError, match="f.npy.*uint8"):
        read_frame(str(tmp_path / "f.npy"))
    cv2.imwrite(str(tmp_path / "deep.png"), bgr.astype(np.uint16) * 257)
    with pytest.raises(UserError, match="deep.png.*uint16"):
        read_frame(str(tmp_path / "deep.png"))


def test_bad_shape_refused(tmp_path):
    np.save(tmp_path / "v.npy", np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(UserError, match="v.npy.*shape"):
        read_frame(str(tmp_path / "v.npy"))


def test_to_tensor_layout(bgr):
    img = bgr.astype(np.float32) / 255.0
    t = to_tensor(img)
    assert t.shape == (3, 32, 48) and t.dtype == torch.float32 and t.is_contiguous()
    assert torch.equal(t[1], torch.from_numpy(img[..., 1]))
    s = frames_to_tensor([img, img[::-1]])
    assert s.shape == (2, 3, 32, 48) and s.is_contiguous()
    assert torch.equal(s[1, 2], torch.from_numpy(np.ascontiguousarray(img[::-1, :, 2])))
