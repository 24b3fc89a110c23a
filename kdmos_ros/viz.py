"""Bird's-eye-view pictures of labelled scans, with a PNG writer of its own (numpy + zlib only).

Used by ``kdmos viz`` to look at simulated or real ground truth, and reusable for predictions:
:func:`label_colours` turns SemanticKITTI ids into colours (moving ids red), :func:`bev_image`
rasterises coloured points seen from above, :func:`write_png` stores the picture. The runtime has no
plotting library, so the PNG encoder is the minimal one of the PNG specification (W3C, 2003):
8-bit RGB, one IDAT chunk, filter type 0 on every row.
"""

from __future__ import annotations

import struct
import zlib
from os import PathLike
from pathlib import Path

import numpy as np

__all__ = [
    "BACKGROUND",
    "MOVING_COLOUR",
    "MOVING_SEMANTIC_TO_STATIC",
    "bev_image",
    "label_colours",
    "scan_bev",
    "write_png",
]

BACKGROUND = (0, 0, 0)
MOVING_COLOUR = (255, 0, 0)
_UNLABELLED = (90, 90, 90)

# Static classes in muted or cool colours so that red means "moving" at a glance; objects that can
# move but stand still (parked cars, waiting people) in saturated non-red colours.
_PALETTE: dict[int, tuple[int, int, int]] = {
    10: (60, 120, 255),  # car
    11: (200, 80, 255),  # bicycle
    13: (40, 80, 200),  # bus
    15: (160, 90, 255),  # motorcycle
    16: (40, 60, 180),  # on-rails
    18: (30, 70, 200),  # truck
    20: (0, 200, 220),  # other-vehicle
    30: (255, 170, 0),  # person
    31: (230, 100, 255),  # bicyclist
    32: (180, 60, 255),  # motorcyclist
    40: (75, 75, 85),  # road
    44: (110, 100, 120),  # parking
    48: (150, 140, 160),  # sidewalk
    49: (120, 110, 130),  # other-ground
    50: (235, 215, 160),  # building
    51: (170, 120, 80),  # fence
    52: (200, 180, 140),  # other-structure
    60: (220, 220, 220),  # lane-marking
    70: (40, 160, 60),  # vegetation
    71: (120, 80, 40),  # trunk
    72: (130, 170, 80),  # terrain
    80: (240, 240, 240),  # pole
    81: (255, 255, 0),  # traffic-sign
    99: (180, 180, 100),  # other-object
}

_LUT = np.empty((1 << 16, 3), dtype=np.uint8)
_LUT[:] = _UNLABELLED
for _id, _colour in _PALETTE.items():
    _LUT[_id] = _colour
_LUT[0] = _UNLABELLED
_LUT[251:260] = MOVING_COLOUR  # SemanticKITTI-MOS moving ids
_LUT.setflags(write=False)

# SemanticKITTI-MOS moving-* ids -> the class of the same object standing still (semantic-kitti.yaml of
# the SemanticKITTI API), to draw a scan with "moving" taken from somewhere else (a model's labels).
MOVING_SEMANTIC_TO_STATIC = np.arange(1 << 16, dtype=np.int64)
for _moving, _static in {
    251: 99,  # moving (unspecified) -> other-object
    252: 10,  # moving-car
    253: 31,  # moving-bicyclist
    254: 30,  # moving-person
    255: 32,  # moving-motorcyclist
    256: 16,  # moving-on-rails
    257: 13,  # moving-bus
    258: 18,  # moving-truck
    259: 20,  # moving-other-vehicle
}.items():
    MOVING_SEMANTIC_TO_STATIC[_moving] = _static
MOVING_SEMANTIC_TO_STATIC.setflags(write=False)


def label_colours(semantic: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 colours of SemanticKITTI semantic ids (or raw packed labels); moving ids red."""
    return _LUT[np.asarray(semantic).astype(np.int64) & 0xFFFF]


def bev_image(
    points_xy: np.ndarray,
    colours: np.ndarray,
    extent: tuple[float, float, float, float] = (-50.0, 50.0, -50.0, 50.0),
    resolution: float = 0.1,
    dot: int = 1,
    image: np.ndarray | None = None,
) -> np.ndarray:
    """Rasterise points seen from above into an (H, W, 3) uint8 picture.

    ``extent`` is (x_min, x_max, y_min, y_max) in metres; x points up the picture and y to the left
    (a LiDAR frame seen from above). Points are drawn in the given order, later ones on top, each as
    a ``dot`` x ``dot`` pixel square, onto ``image`` if given (a picture of the same extent and
    resolution, e.g. to draw predictions over ground truth) or onto a black one.
    """
    x_min, x_max, y_min, y_max = extent
    height = round((x_max - x_min) / resolution)
    width = round((y_max - y_min) / resolution)
    if image is None:
        image = np.empty((height, width, 3), dtype=np.uint8)
        image[:] = BACKGROUND
    elif image.shape != (height, width, 3):
        raise ValueError(
            f"image has shape {image.shape}, the extent and resolution need {(height, width, 3)}"
        )
    xy = np.asarray(points_xy, dtype=np.float64)
    rows = np.floor((x_max - xy[:, 0]) / resolution).astype(np.int64)
    cols = np.floor((y_max - xy[:, 1]) / resolution).astype(np.int64)
    colours = np.asarray(colours, dtype=np.uint8)
    for dr in range(dot):
        for dc in range(dot):
            r, c = rows + dr - dot // 2, cols + dc - dot // 2
            inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            # With repeated indices numpy keeps the last value assigned: later points win.
            image[r[inside], c[inside]] = colours[inside]
    return image


# Ground classes (road, parking, sidewalk, other-ground, lane-marking, terrain) are drawn as fine
# dots under everything else, so objects stand out.
_GROUND_IDS = (40, 44, 48, 49, 60, 72)


def scan_bev(
    points: np.ndarray, semantic: np.ndarray, extent: float = 50.0, resolution: float = 0.1
) -> np.ndarray:
    """Picture of a labelled scan: ground as fine dots, objects over it (higher over lower), moving
    points largest and on top."""
    ids = np.asarray(semantic).astype(np.int64) & 0xFFFF
    moving = ids >= 251
    ground = np.isin(ids, _GROUND_IDS)
    box = (-extent, extent, -extent, extent)
    # Dots of about 0.1, 0.2 and 0.3 m whatever the resolution.
    size = max(0.1 / resolution, 1.0)
    image = None
    for layer, dot in ((ground, size), (~ground & ~moving, 2 * size), (moving, 3 * size)):
        order = np.flatnonzero(layer)[np.argsort(points[layer, 2], kind="stable")]
        image = bev_image(points[order, :2], label_colours(ids[order]), box, resolution, round(dot), image)
    assert image is not None
    return image


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def write_png(path: str | PathLike[str], rgb: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 picture as an 8-bit RGB PNG."""
    image = np.ascontiguousarray(rgb, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) picture, got shape {image.shape}")
    height, width = image.shape[:2]
    # Each scanline starts with its filter type; 0 = none.
    raw = np.concatenate([np.zeros((height, 1), dtype=np.uint8), image.reshape(height, width * 3)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit truecolour, no interlace
    data = (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
        + _chunk(b"IEND", b"")
    )
    target = Path(path)
    target.write_bytes(data)
    return target
