"""What a clip's camera did, measured on the clip alone: its noise, response curve, white level and exposure.

Everything here reads the low-light input and nothing else (never a ground truth), so it can run on a user's video
before enhancing it, and what it returns can be recorded beside the output or matched against training.

* :func:`noise_curve` measures the noise of uint8 frames in linear light (decoded with a given response curve):
  per pixel the response of a second-difference filter that cancels planar image structure (:data:`KERNEL`, unit
  gain for white noise), binned by the local brightness; per bin a robust variance (the median absolute response,
  as for Gaussian noise), less the variance the uint8 quantisation adds. :func:`fit_noise` fits the sensor model of
  ``sdsd.tools.synthesize`` to it, variance ``a * x + b ** 2`` (shot noise ``a``, read noise ``b``), by weighted
  non-negative least squares on the bins well above black, then refined on darker bins too with the clipping at
  black modelled (the mean and variance of a clipped Gaussian).
* :func:`estimate_response` picks, from a list of candidate curves (:data:`CANDIDATES`), the one under which the
  measured noise is best explained by that model: with the wrong curve the variance stops being an affine function
  of the mean (the idea of calibrating a camera's response from its noise).
* :func:`estimate_clip` puts them together: the response (sRGB unless told or asked to estimate it), the noise
  (``a``, ``b``, and the noise standard deviation at the clip's median brightness and at its white level), the
  white level of the input (:func:`sdsd.color.white_level`, in that linear light) and the exposure that white level
  implies for a scene whose well-exposed white level is ``reference_white``. :class:`InputEstimator` collects a
  few frames from a stream of frames for it.

Their accuracy on synthetic clips with known cameras is measured by ``tests/test_estimate.py`` and reported in
``docs/exposure.md``, "Estimating the input's camera".
"""

from __future__ import annotations

import math

import numpy as np

from sdsd import color

#: The second-difference filter whose response is the noise sample: a 3x3 Laplacian of Laplacians divided by 6, so
#: that the squares of its taps sum to 1 (white noise of variance ``v`` gives responses of variance ``v``); it
#: cancels constant and linear image structure.
KERNEL = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]], np.float32) / 6.0
#: Brightness bins of :func:`noise_curve` (equal counts of pixels).
BINS = 24
#: A bin is used by :func:`fit_noise` when its brightness is at least this many noise standard deviations above
#: black (below it, clipping at 0 narrows the noise).
CLIP_MARGIN = 2.5
#: The refinement of :func:`fit_noise`, which models the clipping, uses bins down to this many deviations above black.
REFINE_MARGIN = 1.0
#: At most this many frames of a clip are read (evenly spaced).
MAX_FRAMES = 8
#: At most about this many noise samples (pixels times channels) are kept per frame (a strided subsample), so that
#: large frames cost no more memory than small ones.
SAMPLES_PER_FRAME = 300_000
#: The response curves :func:`estimate_response` chooses from (``(kind, parameter)``).
CANDIDATES = (
    ("srgb", None), ("bt709", None),
    *(("gamma", g) for g in (1.6, 1.8, 2.0, 2.2, 2.4, 2.6, 2.8)),
    *(("log", c) for c in (2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)),
)
#: The white level of well-exposed video assumed by :func:`estimate_clip`'s exposure (ordinary video reads 0.87 to
#: 0.96, docs/exposure.md).
REFERENCE_WHITE = 0.9
_MAD = 0.6744897501960817  # the median of |N(0, 1)|


def _frames(frames) -> np.ndarray:
    """A ``T x H x W x C`` uint8 stack (one ``H x W x C`` frame allowed), at most :data:`MAX_FRAMES` evenly spaced."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got {frames.dtype}")
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or min(frames.shape[1:3]) < 8:
        raise ValueError(f"expected T x H x W x C frames of at least 8 x 8 pixels, got shape {frames.shape}")
    if len(frames) > MAX_FRAMES:
        frames = frames[np.linspace(0, len(frames) - 1, MAX_FRAMES).round().astype(int)]
    return frames


def _samples(frames: np.ndarray, response) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel (borders excluded, channels pooled; a strided subsample of at most about :data:`SAMPLES_PER_FRAME`
    per frame): local mean, filter response and quantisation variance, all in linear light under ``response``."""
    import cv2

    lut = color.response_lut(*response)
    # The linear step of each code (central difference): uniform quantisation in the encoded domain adds this
    # squared over 12 to the variance of a linear value.
    step = np.gradient(lut.astype(np.float64)).astype(np.float32)
    quant = step * step / np.float32(12.0)
    means, responses, quants = [], [], []
    for frame in frames:
        linear = lut[frame]
        r = cv2.filter2D(linear, -1, KERNEL, borderType=cv2.BORDER_REFLECT)[1:-1, 1:-1]
        m = cv2.blur(linear, (3, 3), borderType=cv2.BORDER_REFLECT)[1:-1, 1:-1]
        q = cv2.blur(quant[frame], (3, 3), borderType=cv2.BORDER_REFLECT)[1:-1, 1:-1]
        stride = max(1, m.size // SAMPLES_PER_FRAME)
        means.append(m.ravel()[::stride])
        responses.append(r.ravel()[::stride])
        quants.append(q.ravel()[::stride])
    return np.concatenate(means), np.concatenate(responses), np.concatenate(quants)


def noise_curve(frames, response=("srgb", None), bins: int = BINS) -> dict:
    """The noise of uint8 frames against brightness, in linear light under ``response`` (``(kind, parameter)``,
    :func:`sdsd.color.decode`).

    Returns:
        ``{"mean": [...], "variance": [...], "count": [...]}`` per brightness bin (equal pixel counts; pixels at full
        scale left out): the median local brightness, the noise variance (robust, quantisation removed, at least 0)
        and the number of samples.
    """
    frames = _frames(frames)
    m, r, q = _samples(frames, response)
    keep = m < 0.98  # saturated highlights have no noise left
    m, r, q = m[keep], r[keep], q[keep]
    if m.size < 16 * bins:
        raise ValueError(f"too few usable pixels ({m.size}) to measure noise")
    order = np.argsort(m, kind="stable")
    out = {"mean": [], "variance": [], "count": []}
    for part in np.array_split(order, bins):
        sigma = float(np.median(np.abs(r[part]))) / _MAD
        out["mean"].append(float(np.median(m[part])))
        out["variance"].append(max(0.0, sigma * sigma - float(np.mean(q[part]))))
        out["count"].append(int(part.size))
    return out


def _clipped_moments(mu: np.ndarray, sd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of ``max(0, N(mu, sd ** 2))``: noise clipped at black, as a sensor's output is."""
    from scipy.special import ndtr

    z = mu / sd
    cdf, pdf = ndtr(z), np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    mean = mu * cdf + sd * pdf
    second = (mu * mu + sd * sd) * cdf + mu * sd * pdf
    return mean, np.maximum(second - mean * mean, 1e-30)


def _clipped_variance(observed_mean: np.ndarray, a: float, b2: float) -> np.ndarray:
    """The variance the model ``a * x + b2`` predicts for bins whose clipped mean is ``observed_mean``: the signal
    ``mu`` whose clipped mean is the observed one is found by bisection (the clipped mean grows with ``mu``)."""
    sd_top = np.sqrt(a * np.maximum(observed_mean, 0) + b2) + 1e-12
    lo, hi = observed_mean - 12 * sd_top - 1e-6, observed_mean.copy()
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        mean, _ = _clipped_moments(mid, np.sqrt(a * np.maximum(mid, 0) + b2) + 1e-12)
        above = mean > observed_mean
        hi, lo = np.where(above, mid, hi), np.where(above, lo, mid)
    mu = 0.5 * (lo + hi)
    return _clipped_moments(mu, np.sqrt(a * np.maximum(mu, 0) + b2) + 1e-12)[1]


def fit_noise(curve: dict) -> dict:
    """Fit ``variance = a * mean + b ** 2`` to :func:`noise_curve`'s bins.

    First weighted least squares (each bin weighted by its count over its fitted variance squared, the variance of
    a variance estimate) with ``a, b >= 0`` on the bins at least :data:`CLIP_MARGIN` noise standard deviations above
    black, iterated; then a refinement on every bin with a positive mean and variance that models the clipping at
    black (a clipped Gaussian's mean and variance), so that dark clips and strong read noise are measured too.

    Returns:
        ``{"shot_noise": a, "read_noise": b, "bins_used": n, "misfit": chi2}``: ``misfit`` is the count-weighted mean
        squared relative residual of the bins used (about ``2 / count`` for a perfect model; larger when the
        variance is not affine in the mean, e.g. under the wrong response curve).
    """
    from scipy.optimize import least_squares, nnls

    x = np.asarray(curve["mean"], np.float64)
    v = np.asarray(curve["variance"], np.float64)
    n = np.asarray(curve["count"], np.float64)
    fitted = np.maximum(v, 1e-14)
    a = b2 = 0.0
    for _ in range(3):
        use = x >= CLIP_MARGIN * np.sqrt(fitted)
        if use.sum() < 2:
            use = np.isin(np.arange(len(x)), np.argsort(-x)[: max(2, len(x) // 2)])
        w = np.sqrt(n[use]) / np.maximum(fitted[use], 1e-14)
        design = np.stack([x[use], np.ones(use.sum())], 1) * w[:, None]
        (a, b2), _ = nnls(design, v[use] * w)
        fitted = np.maximum(a * x + b2, 1e-14)
    # Bins deeper than REFINE_MARGIN noise deviations hold mostly black codes, where the median absolute response
    # stops measuring the variance: left out of the refinement too.
    use = (x >= REFINE_MARGIN * np.sqrt(fitted)) & (v > 0)
    if use.sum() >= 3:
        floor = 1e-12
        lower, upper = np.log([1e-8, 1e-12]), np.log([0.1, 0.01])
        start = np.clip(np.log([max(a, 1e-7), max(b2, 1e-10)]), lower + 1e-6, upper - 1e-6)

        def residual(theta):
            pred = _clipped_variance(x[use], math.exp(theta[0]), math.exp(theta[1]))
            return np.sqrt(n[use]) * (v[use] - pred) / np.maximum(pred, floor)

        fit = least_squares(residual, start, bounds=(lower, upper), x_scale=1.0, max_nfev=200)
        a, b2 = math.exp(fit.x[0]), math.exp(fit.x[1])
        pred = _clipped_variance(x[use], a, b2)
    else:
        pred = fitted[use]
    rel = (v[use] - pred) / np.maximum(pred, 1e-14)
    misfit = float(np.sum(n[use] * rel * rel) / max(np.sum(n[use]), 1.0))
    return {"shot_noise": float(a), "read_noise": float(math.sqrt(b2)), "bins_used": int(use.sum()),
            "misfit": misfit}


def noise_std(noise: dict, brightness: float) -> float:
    """The noise standard deviation the fitted model (:func:`fit_noise`) gives at a linear brightness."""
    return math.sqrt(noise["shot_noise"] * brightness + noise["read_noise"] ** 2)


def estimate_response(frames, candidates=CANDIDATES) -> tuple[tuple[str, float | None], list[dict]]:
    """The candidate response curve under which the clip's noise best fits the Poisson-Gaussian model.

    Returns:
        ``((kind, parameter), scores)``: the curve with the lowest :func:`fit_noise` misfit, and every candidate's
        ``{"response", "response_param", "misfit"}``.
    """
    frames = _frames(frames)
    scores = []
    for kind, param in candidates:
        fit = fit_noise(noise_curve(frames, (kind, param)))
        scores.append({"response": kind, "response_param": param, "misfit": fit["misfit"]})
    best = min(scores, key=lambda s: s["misfit"])
    return (best["response"], best["response_param"]), scores


def estimate_clip(frames, response=("srgb", None), reference_white: float = REFERENCE_WHITE) -> dict:
    """Estimate a clip's camera from its (low-light) frames alone.

    Args:
        frames: ``T x H x W x 3`` uint8 frames (a video's, as decoded; any channel order); at most
            :data:`MAX_FRAMES` evenly spaced ones are read.
        response: ``(kind, parameter)`` of the response curve to decode with: by default sRGB, the decoding
            ``sdsd.enhance --exposure auto`` and the network's training assume, so the noise is in the linear light
            they see; the camera's own curve when known; ``"estimate"`` to pick it (:func:`estimate_response`,
            whose accuracy is low: docs/exposure.md).
        reference_white: the white level a well-exposed frame of the scene would have (sRGB-decoded linear light,
            :func:`sdsd.color.white_level`), for the exposure.

    Returns:
        ``{"response", "response_param", "response_estimated", "shot_noise", "read_noise", "noise_bins",
        "median_linear", "noise_std_at_median", "white_level", "noise_std_at_white", "white_level_srgb",
        "exposure"}``: the curve; the fitted noise model in that curve's linear light and how many brightness bins
        it rests on (fewer than 6: a clip too dark or too flat in brightness to trust it); the clip's median linear
        brightness and the noise standard deviation there; its white level in that linear light and the noise
        there; its white level decoded as sRGB (what ``--exposure auto`` measures); and the exposure: the white
        level over the reference white level carried into the same linear light.
    """
    frames = _frames(frames)
    estimated = isinstance(response, str)
    if estimated:
        if response != "estimate":
            raise ValueError(f"response must be (kind, parameter) or 'estimate', not {response!r}")
        response, _ = estimate_response(frames)
    kind, param = response
    noise = fit_noise(noise_curve(frames, (kind, param)))
    linear = color.response_lut(kind, param)[frames]
    median = float(np.median(linear))
    white = color.white_level(linear)
    # The reference white in this camera's linear light: the code a well-exposed sRGB frame gives it, decoded here.
    reference = float(color.decode(color.linear_to_srgb(np.float32(reference_white)), kind, param))
    return {
        "response": kind, "response_param": param, "response_estimated": estimated,
        "shot_noise": noise["shot_noise"], "read_noise": noise["read_noise"], "noise_bins": noise["bins_used"],
        "median_linear": median, "noise_std_at_median": noise_std(noise, median),
        "white_level": white, "noise_std_at_white": noise_std(noise, white),
        "white_level_srgb": color.white_level(color.LINEAR_LUT[frames]),
        "exposure": white / reference if reference > 0 else math.nan,
    }


def to_uint8(frame: np.ndarray) -> np.ndarray:
    """A decoded frame as uint8 codes: uint8 as it is, 16-bit shifted down, floats in [0, 1] scaled and rounded."""
    if frame.dtype == np.uint8:
        return frame
    if frame.dtype == np.uint16:
        return (frame >> 8).astype(np.uint8)
    return np.round(np.clip(np.asarray(frame, np.float32), 0, 1) * 255).astype(np.uint8)


class InputEstimator:
    """Watches the frames of a video go by (unchanged) and estimates its camera from a few of them.

    It keeps every ``stride``-th frame, at most ``keep`` of them (copies, as uint8: :func:`to_uint8`), and
    :meth:`summary` runs :func:`estimate_clip` on those. Put it in front of anything that changes the frames (the
    exposure matcher) so that it measures the input as decoded::

        estimator = InputEstimator()
        frames = estimator(frames)      # a generator: the same frames, in order
        ...                             # consume them
        estimator.summary()             # None when no frame was seen
    """

    def __init__(self, keep: int = MAX_FRAMES, stride: int = 4):
        self.keep, self.stride = int(keep), max(1, int(stride))
        self.frames: list[np.ndarray] = []
        self.seen = 0

    def __call__(self, frames):
        for frame in frames:
            if self.seen % self.stride == 0 and len(self.frames) < self.keep:
                self.frames.append(to_uint8(np.asarray(frame)).copy())
            self.seen += 1
            yield frame

    def summary(self, **options) -> dict | None:
        """:func:`estimate_clip` of the frames kept (``options`` passed on), with ``"frames_read"``; ``None`` when
        none were seen or they are too small or too flat to measure."""
        if not self.frames:
            return None
        try:
            result = estimate_clip(np.stack(self.frames), **options)
        except ValueError:
            return None
        result["frames_read"] = len(self.frames)
        return result
