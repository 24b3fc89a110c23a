"""Bird's-eye-view pictures and the PNG writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support import read_png

from kdmos_ros.viz import MOVING_COLOUR, bev_image, label_colours, scan_bev, write_png


def test_png_round_trips_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    path = write_png(tmp_path / "x.png", picture)
    np.testing.assert_array_equal(read_png(path), picture)
    with pytest.raises(ValueError, match="H, W, 3"):
        write_png(tmp_path / "y.png", picture[:, :, 0])


def test_label_colours_make_moving_red_and_nothing_else() -> None:
    moving = label_colours(np.arange(251, 260))
    assert np.all(moving == MOVING_COLOUR)
    static = label_colours(np.array([0, 10, 11, 18, 20, 30, 31, 40, 44, 48, 50, 51, 70, 71, 72, 80, 81]))
    assert not np.any(np.all(static == MOVING_COLOUR, axis=1))
    assert len({tuple(c) for c in static[1:]}) == len(static) - 1  # every class its own colour
    # Packed labels (instance in the high bits) colour like their semantic id.
    packed = (np.uint32(7) << np.uint32(16)) | np.uint32(252)
    assert np.all(label_colours(np.array([packed])) == MOVING_COLOUR)


def test_bev_puts_forward_up_and_left_left() -> None:
    points = np.array([[10.0, 0.0], [0.0, 10.0]])
    colours = np.array([[255, 0, 0], [0, 255, 0]], dtype=np.uint8)
    image = bev_image(points, colours, extent=(-20.0, 20.0, -20.0, 20.0), resolution=1.0)
    assert image.shape == (40, 40, 3)
    assert tuple(image[10, 20]) == (255, 0, 0)  # 10 m ahead: above the centre
    assert tuple(image[20, 10]) == (0, 255, 0)  # 10 m to the left: left of the centre
    assert np.count_nonzero(image.any(axis=2)) == 2


def test_scan_bev_draws_moving_points_over_static_ones() -> None:
    # A moving point under a roof point at the same spot still shows.
    points = np.array([[5.0, 5.0, 0.5, 0.0], [5.0, 5.0, 3.0, 0.0]], dtype=np.float32)
    semantic = np.array([252, 50], dtype=np.uint32)
    image = scan_bev(points, semantic, extent=10.0, resolution=0.5)
    assert tuple(image[10, 10]) == MOVING_COLOUR
