"""Frame windows at clip ends (the examples of docs/protocol.md#frame-windows) and short clips."""

import pytest

from sdsd.data.windows import PADDINGS, index_generation
from sdsd.errors import UserError


@pytest.mark.parametrize(
    "padding, expected",
    [
        ("replicate", [0, 0, 0, 1, 2]),
        ("reflection", [2, 1, 0, 1, 2]),
        ("new_info", [4, 3, 0, 1, 2]),
        ("circle", [3, 4, 0, 1, 2]),
    ],
)
def test_spec_examples(padding, expected):
    assert index_generation(0, 30, 5, padding) == expected


@pytest.mark.parametrize(
    "padding, centre, expected",
    [
        ("replicate", 29, [27, 28, 29, 29, 29]),
        ("reflection", 29, [27, 28, 29, 28, 27]),
        ("new_info", 29, [27, 28, 29, 26, 25]),
        ("circle", 29, [27, 28, 29, 25, 26]),
        ("new_info", 1, [4, 0, 1, 2, 3]),
        ("new_info", 28, [26, 27, 28, 29, 25]),
    ],
)
def test_end_of_clip(padding, centre, expected):
    assert index_generation(centre, 30, 5, padding) == expected


def test_interior_is_plain_window():
    for padding in PADDINGS:
        assert index_generation(10, 30, 5, padding) == [8, 9, 10, 11, 12]
        assert index_generation(10, 30, 7, padding) == [7, 8, 9, 10, 11, 12, 13]


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 9])
def test_short_clips_stay_in_range(padding, n):
    for centre in range(n):
        idx = index_generation(centre, n, 5, padding)
        assert len(idx) == 5 and idx[2] == centre
        assert all(0 <= j < n for j in idx)


def test_short_clip_clamps_after_rule():
    # new_info would ask for frame 4 of a 3-frame clip; it is clamped to the last frame.
    assert index_generation(0, 3, 5, "new_info") == [2, 2, 0, 1, 2]
    assert index_generation(0, 1, 5, "reflection") == [0, 0, 0, 0, 0]


def test_bad_options():
    with pytest.raises(UserError, match="padding.*'mirror'"):
        index_generation(0, 10, 5, "mirror")
    with pytest.raises(UserError, match="N_frames.*odd"):
        index_generation(0, 10, 4, "new_info")
    with pytest.raises(ValueError):
        index_generation(10, 10, 5, "new_info")
