"""PSNR/SSIM match docs/protocol.md#metrics and scikit-image on real photographs; conversions and protocol variants."""

import math

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from sdsd.metrics import bgr_to_y, calculate_psnr, calculate_ssim, gt_mean_scale, score_frame, tensor_to_uint8_bgr


def degraded(img: np.ndarray, seed: int = 0) -> np.ndarray:
    """A realistic distortion: blur plus Gaussian noise plus a brightness shift, back to uint8."""
    rng = np.random.default_rng(seed)
    out = cv2.GaussianBlur(img, (5, 5), 1.2).astype(np.float64) + rng.normal(0, 8, img.shape) + 6
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def sk_ssim(a, b):
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    if a.ndim == 3:
        kw["channel_axis"] = 2
    return structural_similarity(a, b, **kw)


def spec_ssim(a, b):
    """SSIM as docs/protocol.md#ssim states it: filter2D with the outer-product window, per channel, 5-px crop."""
    k = cv2.getGaussianKernel(11, 1.5)
    win = np.outer(k, k.transpose())
    chans = [(a, b)] if a.ndim == 2 else [(a[..., c], b[..., c]) for c in range(a.shape[2])]
    vals = []
    for x, y in chans:
        x, y = x.astype(np.float64), y.astype(np.float64)
        f = lambda z: cv2.filter2D(z, -1, win)[5:-5, 5:-5]  # noqa: E731
        mx, my = f(x), f(y)
        sx, sy, sxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
        c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
        vals.append((((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sx + sy + c2))).mean())
    return float(np.mean(vals))


PHOTOS = ["astronaut", "coffee", "chelsea"]


@pytest.mark.parametrize("name", PHOTOS)
def test_psnr_matches_skimage(name):
    a = getattr(skimage.data, name)()
    b = degraded(a)
    assert calculate_psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-10)


@pytest.mark.parametrize("name", PHOTOS)
def test_ssim_matches_skimage_and_spec_colour(name):
    a = getattr(skimage.data, name)()[:256, :320, ::-1].copy()  # BGR, as the protocol scores it
    b = degraded(a, seed=1)
    ours = calculate_ssim(a, b)
    assert 0.2 < ours < 0.99
    assert ours == pytest.approx(sk_ssim(a, b), abs=1e-9)
    assert ours == pytest.approx(spec_ssim(a, b), abs=1e-12)


def test_ssim_grayscale_2d():
    a = skimage.data.camera()
    b = degraded(a, seed=2)
    assert calculate_ssim(a, b) == pytest.approx(sk_ssim(a, b), abs=1e-9)
    assert calculate_ssim(a, b) == pytest.approx(spec_ssim(a, b), abs=1e-12)


def test_colour_ssim_is_mean_of_channel_ssim():
    a = skimage.data.astronaut()
    b = degraded(a, seed=3)
    per_channel = [calculate_ssim(a[..., c], b[..., c]) for c in range(3)]
    assert calculate_ssim(a, b) == pytest.approx(np.mean(per_channel), abs=1e-12)


def test_identical_images():
    a = skimage.data.coffee()
    assert calculate_psnr(a, a.copy()) == math.inf
    assert calculate_ssim(a, a.copy()) == pytest.approx(1.0, abs=1e-12)


def test_psnr_formula_float64():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255  # mse = 255^2 / 48
    assert calculate_psnr(a, b) == pytest.approx(20 * math.log10(255 / math.sqrt(255**2 / 48)), abs=1e-12)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        calculate_psnr(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="too small"):
        calculate_ssim(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8))


def test_tensor_to_uint8_bgr():
    t = torch.zeros(3, 2, 2)
    t[0] = 1.5  # R, clamped to 255
    t[1, 0, 0] = 0.5  # 127.5 rounds half to even -> 128
    t[1, 0, 1] = 0.501
    t[2] = -0.2  # B clamped to 0
    img = tensor_to_uint8_bgr(t)
    assert img.dtype == np.uint8 and img.shape == (2, 2, 3)
    assert (img[..., 2] == 255).all() and (img[..., 0] == 0).all()  # BGR order
    assert img[0, 0, 1] == 128 and img[0, 1, 1] == 128
    rgb = skimage.data.astronaut()
    back = tensor_to_uint8_bgr(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    np.testing.assert_array_equal(back, rgb[..., ::-1])


def test_y_channel_matches_bt601():
    rgb = skimage.data.chelsea()
    y = bgr_to_y(rgb[..., ::-1].copy())
    np.testing.assert_array_equal(y, np.round(rgb2ycbcr(rgb)[..., 0]))
    assert y.min() >= 16 and y.max() <= 235


def test_gt_mean_scaling():
    gt = torch.rand(3, 32, 32) * 0.5 + 0.25
    out = gt * 0.5
    scaled = gt_mean_scale(out, gt)
    torch.testing.assert_close(scaled, gt, atol=1e-6, rtol=0)
    psnr_plain, _ = score_frame(out, gt)
    psnr_scaled, _ = score_frame(out, gt, gt_mean=True)
    assert psnr_scaled > psnr_plain + 10


def test_score_frame_protocols():
    rgb = torch.from_numpy(skimage.data.coffee()[:96, :128]).permute(2, 0, 1).float() / 255
    noisy = (rgb + 0.05 * torch.randn(rgb.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    psnr, ssim = score_frame(noisy, rgb)
    a, b = tensor_to_uint8_bgr(noisy), tensor_to_uint8_bgr(rgb)
    assert (psnr, ssim) == (calculate_psnr(a, b), calculate_ssim(a, b))
    psnr_y, ssim_y = score_frame(noisy, rgb, channel="y")
    assert (psnr_y, ssim_y) == (calculate_psnr(bgr_to_y(a), bgr_to_y(b)), calculate_ssim(bgr_to_y(a), bgr_to_y(b)))
    assert psnr_y != psnr
    with pytest.raises(ValueError, match="channel"):
        score_frame(noisy, rgb, channel="lab")


def test_score_frame_float_psnr_and_ssim_switch():
    rgb = torch.from_numpy(skimage.data.coffee()[:64, :96]).permute(2, 0, 1).float() / 255
    out = (rgb + 0.3 / 255).clamp(0, 1)  # less than half a level: the rounded frames are identical
    assert score_frame(out, rgb)[0] == math.inf
    psnr, ssim = score_frame(out, rgb, psnr="float", ssim=False)
    assert ssim is None and 55 < psnr < 60  # 10 log10(1 / (0.3/255)^2) = 58.6 dB, a little more where clamped
    assert score_frame(rgb, rgb, psnr="float")[0] == 100.0  # Retinexformer's value for identical frames
    with pytest.raises(ValueError, match="RGB"):
        score_frame(out, rgb, channel="y", psnr="float")
    with pytest.raises(ValueError, match="gt_mean"):
        score_frame(out, rgb, gt_mean="kind")
    assert score_frame(out * 0.5, rgb, gt_mean=True) == score_frame(out * 0.5, rgb, gt_mean="bt601")
