"""Which frames form the N-frame input window around a centre frame.

For centre ``i`` in a clip of ``n`` frames the window is ``i - N//2 .. i + N//2``; an index ``j`` outside
``0 .. n-1`` is replaced according to ``padding``:

* ``replicate``: clamp to the nearest end.
* ``reflection``: mirror around the end frame (``-j``, or ``2(n-1) - j``).
* ``new_info`` (all published configs): ``j < 0 -> i + N//2 - j``; ``j > n-1 -> i - N//2 - (j - (n-1))``,
  i.e. frames from the other side of the window that bring new information.
* ``circle``: ``j < 0 -> N + j``; ``j > n-1 -> j - N``.

For ``i = 0, N = 5``: replicate ``[0,0,0,1,2]``, reflection ``[2,1,0,1,2]``, new_info ``[4,3,0,1,2]``,
circle ``[3,4,0,1,2]``.

Clips shorter than the window (``n < N``): the rules above can point outside the clip, so every index is
clamped into ``0 .. n-1`` after the rule. For ``n >= N`` every rule already stays inside the clip, so the
clamp never changes a result there (the published behaviour is kept exactly).
"""

from __future__ import annotations

from sdsd.errors import UserError

PADDINGS = ("new_info", "replicate", "reflection", "circle")


def check_window_options(N: int, padding: str, where: str = "datasets") -> None:
    """Raise a UserError unless ``N`` is a positive odd integer and ``padding`` a known rule.

    Args:
        N: window width (``N_frames``).
        padding: the padding rule name.
        where: option prefix for the message, e.g. ``datasets.train``.
    """
    if isinstance(N, bool) or not isinstance(N, int) or N < 1 or N % 2 == 0:
        raise UserError(f"{where}.N_frames must be a positive odd integer (got {N!r}), e.g. 5")
    if padding not in PADDINGS:
        raise UserError(f"{where}.padding is {padding!r}; use one of {', '.join(PADDINGS)}")


def index_generation(center: int, n: int, N: int, padding: str = "new_info") -> list[int]:
    """Return the ``N`` frame indices of the window centred on frame ``center`` of an ``n``-frame clip.

    Args:
        center: index of the centre frame, ``0 <= center < n``.
        n: number of frames in the clip (for the test protocol, the frames used: at most 30).
        N: window width, odd.
        padding: ``new_info``, ``replicate``, ``reflection`` or ``circle``.

    Returns:
        ``N`` indices, all within ``0 .. n-1`` (see the module docstring for clips shorter than ``N``).

    Raises:
        UserError: unknown padding or an even/non-positive ``N``.
        ValueError: ``center`` outside the clip (a programming error).
    """
    check_window_options(N, padding)
    if not 0 <= center < n:
        raise ValueError(f"centre {center} outside a clip of {n} frames")
    half = N // 2
    last = n - 1
    out = []
    for j in range(center - half, center + half + 1):
        if j < 0:
            if padding == "replicate":
                k = 0
            elif padding == "reflection":
                k = -j
            elif padding == "new_info":
                k = center + half - j
            else:
                k = N + j
        elif j > last:
            if padding == "replicate":
                k = last
            elif padding == "reflection":
                k = 2 * last - j
            elif padding == "new_info":
                k = center - half - (j - last)
            else:
                k = j - N
        else:
            k = j
        out.append(min(max(k, 0), last))
    return out
