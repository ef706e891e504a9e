"""sdsd.enhance.StreamingEnhancer: streaming = the plain windowed forward; tiling; padding; option inference."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from sdsd.archs import build_network
from sdsd.archs.fastconv import WinogradConv2d, nnpack_available
from sdsd.data.windows import index_generation
from sdsd.enhance import (
    PUBLISHED_NETWORK,
    StreamingEnhancer,
    infer_network_options,
    pad_to_multiple,
    plan_tiles,
    tile_weights,
)
from sdsd.errors import UserError

TINY = {"nf": 8, "nframes": 5, "groups": 2, "front_RBs": 1, "back_RBs": 1}




@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_network(TINY).eval()


def random_frames(n: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.random((height, width, 3)) * 120).astype(np.uint8) for _ in range(n)]


@torch.no_grad()
def plain_forward(net, frames: list[np.ndarray], padding: str = "new_info") -> np.ndarray:
    """The test protocol without streaming: every window built from the whole clip, one forward each."""
    n = len(frames)
    h, w = frames[0].shape[:2]
    x = torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames])
    x = pad_to_multiple(x)
    out = []
    for i in range(n):
        window = x[index_generation(i, n, net.nframes, padding)][None]
        out.append(net(window)[0][0, :, :h, :w].clamp(0, 1).permute(1, 2, 0).numpy())
    return np.stack(out)


def enhance(net, frames, **kwargs) -> np.ndarray:
    # Plain PyTorch convolutions unless a test asks otherwise: these tests check the streaming logic to float
    # precision, and the Winograd backend rounds differently (checked on its own below).
    kwargs.setdefault("conv_backend", "nchw")
    return np.stack(list(StreamingEnhancer(net, **kwargs).enhance(frames, as_float=True)))


@pytest.fixture(scope="module")
def clip(net):
    frames = random_frames(10, 48, 64)
    return frames, plain_forward(net, frames)


@pytest.mark.parametrize("batch", [1, 3])
def test_streaming_equals_plain_windowed_forward(net, clip, batch):
    frames, expected = clip
    np.testing.assert_allclose(enhance(net, frames, batch=batch), expected, atol=2e-5)


def test_streaming_odd_size_short_clip_and_other_padding(net):
    frames = random_frames(3, 37, 45, seed=1)  # fewer frames than the window; size padded 48 x 48 and cropped
    got = enhance(net, frames, padding="replicate")
    assert got.shape == (3, 37, 45, 3)
    np.testing.assert_allclose(got, plain_forward(net, frames, "replicate"), atol=2e-5)


def test_default_backend_agrees_with_plain_convolutions(net, clip):
    frames, expected = clip
    fast = copy.deepcopy(net)
    got = enhance(fast, frames, conv_backend="auto")
    np.testing.assert_allclose(got, expected, atol=2e-4)
    if nnpack_available():
        assert any(type(m) is WinogradConv2d for m in fast.modules())


def test_uint8_output_is_rounded_float_output(net, clip):
    frames, expected = clip
    as_uint8 = np.stack(list(StreamingEnhancer(net, batch=4).enhance(frames)))
    assert as_uint8.dtype == np.uint8
    expected = np.round(expected * 255)
    assert np.abs(as_uint8.astype(np.float64) - expected).max() <= 1


def test_features_once_per_frame_and_bounded_lookahead(net):
    n, half = 14, 2
    frames = random_frames(n, 32, 48, seed=3)
    extracted = []
    original = net.extract_features

    def counting(x):
        extracted.append(x.shape[0])
        return original(x)

    consumed = []

    def source():
        for i, f in enumerate(frames):
            consumed.append(i)
            yield f

    enhancer = StreamingEnhancer(net, batch=2)
    net.extract_features = counting
    try:
        produced = 0
        for _ in enhancer.enhance(source()):
            # Output i needs frames up to max(i + N//2, 2 * N//2) (and a batch of 2 reads one window further).
            assert len(consumed) <= max(produced + 1 + half, 2 * half + 1) + 1
            produced += 1
    finally:
        del net.extract_features
    assert produced == n
    assert sum(extracted) == n  # every frame's features computed exactly once


def test_tiled_equals_untiled_away_from_the_seams(net):
    # 60 x 170 pads to 64 x 176: one tile row, two 128-wide tiles; their overlap (columns 48..127) is the band
    # where both tiles are blended. Outside it each pixel comes from one tile whose borders are far away.
    assert plan_tiles(176, 128, 64) == ([0, 48], 128) and plan_tiles(64, 128, 64) == ([0], 64)
    frames = random_frames(5, 60, 170, seed=4)
    whole = enhance(net, frames)
    tiled = enhance(net, frames, tile=128, overlap=64)
    diff = np.abs(tiled - whole).max(axis=(0, 1, 3))
    band = np.zeros(170, bool)
    band[48:128] = True
    assert diff[~band].max() < 5e-5
    assert diff[band].max() < 2.0 / 255  # inside the band the blend keeps the difference below 2 grey levels


def test_no_seam_on_a_flat_image(net):
    frames = [np.full((80, 160, 3), 50, np.uint8)]  # 2 x 4 tiles of 64 x 64
    whole = enhance(net, frames)[0]
    # Abutting tiles (no overlap) show a seam: each tile's border sees the convolutions' zero padding.
    naive = np.abs(enhance(net, frames, tile=64, overlap=0)[0] - whole).max(axis=2)
    assert naive.max() > 4.0 / 255
    blended = enhance(net, frames, tile=64, overlap=32)[0]
    assert np.abs(blended - whole).max() < 0.25 / 255
    # No step across the seams either: neighbouring columns/rows differ no more than in the untiled output.
    for axis in (0, 1):
        step_tiled = np.abs(np.diff(blended, axis=axis))
        step_whole = np.abs(np.diff(whole, axis=axis))
        assert (step_tiled - step_whole).max() < 0.25 / 255


def test_tile_plan_and_weights():
    starts, length = plan_tiles(1088, 512, 64)
    assert length == 512 and starts[0] == 0 and starts[-1] == 1088 - 512
    assert all(s % 16 == 0 for s in starts)
    assert all(b - a <= 512 - 64 for a, b in zip(starts, starts[1:]))
    assert plan_tiles(480, 512, 64) == ([0], 480)
    total = np.zeros(1088)
    for s, w in zip(starts, tile_weights(starts, length)):
        assert w.min() >= 0 and w.max() <= 1
        total[s:s + length] += w.numpy()
    np.testing.assert_allclose(total, 1.0, atol=1e-12)


def test_pad_to_multiple_reflects_or_replicates():
    x = torch.arange(2 * 3 * 18 * 20, dtype=torch.float32).view(2, 3, 18, 20)
    padded = pad_to_multiple(x)
    assert padded.shape == (2, 3, 32, 32)
    torch.testing.assert_close(padded[..., 18, :20], x[..., 16, :])  # reflected row
    tiny = torch.rand(1, 3, 5, 7)
    small = pad_to_multiple(tiny)
    assert small.shape == (1, 3, 16, 16)
    torch.testing.assert_close(small[..., 15, 15], tiny[..., 4, 6])  # replicated corner
    assert pad_to_multiple(padded) is padded


@pytest.mark.parametrize("opts", [TINY, {**TINY, "nframes": 3, "w_TSA": False, "groups": 1, "back_RBs": 2},
                                  PUBLISHED_NETWORK])
def test_infer_network_options_from_state_dict(opts):
    state = build_network(opts).state_dict()
    inferred = infer_network_options(state)
    for key, value in {**PUBLISHED_NETWORK, **opts}.items():
        assert inferred[key] == value, key
    net = build_network(inferred)
    net.load_state_dict(state)


def test_bad_frames_and_options_are_user_errors(net):
    with pytest.raises(UserError, match="same size"):
        list(StreamingEnhancer(net).enhance(random_frames(1, 32, 32) + random_frames(1, 32, 48)))
    with pytest.raises(UserError, match="16 px"):
        list(StreamingEnhancer(net).enhance(random_frames(2, 12, 40)))
    with pytest.raises(UserError, match="uint8"):
        list(StreamingEnhancer(net).enhance([np.zeros((32, 32, 3), np.float64)]))
    with pytest.raises(UserError, match="half"):
        StreamingEnhancer(net, tile=64, overlap=48)
    with pytest.raises(UserError, match="nframes"):
        StreamingEnhancer(net, nframes=3)
    with pytest.raises(UserError, match="not an SDSD-Net"):
        infer_network_options({"weight": torch.zeros(3)})


def test_bf16_autocast_stays_close(net):
    frames = random_frames(4, 32, 48, seed=5)
    full = enhance(net, frames)
    bf16 = enhance(net, frames, amp="bf16")
    assert bf16.dtype == np.float32 and np.abs(bf16 - full).mean() < 2e-3
