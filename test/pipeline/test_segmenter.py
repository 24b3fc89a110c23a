"""MotionSegmenter end to end, with a real onnxruntime session on the street scene and real KITTI."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from scenes import street
from support import write_oracle_model

from kdmos_ros.io.semantickitti import open_sequence
from kdmos_ros.pipeline.contract import InputOptions, ModelContract
from kdmos_ros.pipeline.features import features_at, transform
from kdmos_ros.pipeline.grid import GRIDS
from kdmos_ros.pipeline.segmenter import (
    LABEL_MOVING,
    LABEL_STATIC,
    LABEL_UNKNOWN,
    STAGES,
    InvalidScanError,
    MotionSegmenter,
    moving_probability,
)

CONTRACT = ModelContract(grid=GRIDS["full"], preset="oracle")


@pytest.fixture(scope="module")
def segmenter_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_oracle_model(tmp_path_factory.mktemp("model") / "oracle.onnx", CONTRACT)


def test_moving_probability_ignores_the_ignore_class() -> None:
    logits = np.array([[100.0, 0.0, 0.0, 0.0], [0.0, 1.0, -50.0, 1.0]], dtype=np.float32)
    prob = moving_probability(logits, moving_class=3, ignore_class=0)
    np.testing.assert_allclose(prob, [1 / 3, 0.5], rtol=1e-6)


def test_moving_probability_is_the_softmax_even_for_extreme_logits() -> None:
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(500, 4)) * 30.0).astype(np.float32)
    logits[:3] = [[0.0, 200.0, -200.0, 0.0], [0.0, -200.0, 0.0, 200.0], [0.0, 0.0, np.nan, 0.0]]
    scores = logits[:, 1:].astype(np.float64)
    exp = np.exp(scores - np.nanmax(scores, axis=1, keepdims=True))
    expected = exp[:, 2] / exp.sum(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflowing term must not warn once per scan
        prob = moving_probability(logits, moving_class=3, ignore_class=0)
    assert prob.dtype == np.float32
    np.testing.assert_allclose(prob[:2], [0.0, 1.0], atol=1e-30)
    assert np.isnan(prob[2])  # a broken output stays visible to the segmenter's check
    np.testing.assert_allclose(prob[3:], expected[3:], rtol=1e-5, atol=1e-30)


def test_the_moving_box_is_labelled_moving_and_the_street_static(segmenter_path: Path) -> None:
    segmenter = MotionSegmenter.from_path(segmenter_path)
    scans = street(10)
    results = [segmenter.process(s.points, s.pose, s.stamp) for s in scans]
    first, last = results[0], results[-1]
    assert first.window_fill == (0, 4) and not first.window_full
    assert last.window_full and last.reset_reason is None
    assert set(last.timings) == set(STAGES)
    scan = scans[-1]
    assert len(last.labels) == len(scan.points)
    box_moving = np.mean(last.labels[scan.on_box] == LABEL_MOVING)
    # Points inside the grid that are not on the box: ground and wall.
    rho = np.hypot(scan.points[:, 0], scan.points[:, 1])
    static_area = ~scan.on_box & (rho > 2.0) & (rho < 50.0)
    wrongly_moving = np.mean(last.labels[static_area] == LABEL_MOVING)
    print(f"\nbox points moving: {box_moving:.1%}; static points called moving: {wrongly_moving:.3%}")
    assert box_moving > 0.3
    assert wrongly_moving < 0.01
    assert last.moving_prob.dtype == np.float32 and last.labels.dtype == np.uint8


def test_outputs_follow_input_order_with_unknown_for_bad_points(segmenter_path: Path) -> None:
    scans = street(9)
    segmenter = MotionSegmenter.from_path(segmenter_path)
    for s in scans[:-1]:
        segmenter.process(s.points, s.pose, s.stamp)
    points = scans[-1].points.copy()
    points[[3, 30, 300], 0] = np.nan
    points[[4, 40], 2] = -np.inf
    points[[5, 50], :3] = [0.5, 0.5, 0.0]  # inside the inner radius
    result = segmenter.process(points, scans[-1].pose, scans[-1].stamp)
    bad = [3, 30, 300, 4, 40, 5, 50]
    assert np.all(result.labels[bad] == LABEL_UNKNOWN)
    assert np.all(result.moving_prob[bad] == 0.0)
    # Every other point carries the probability the model gives its own features, in input order.
    reference = features_at(
        CONTRACT.grid,
        CONTRACT.motion,
        [s.points for s in scans[:-1]] + [points],
        [s.pose for s in scans],
        [s.stamp for s in scans],
        len(scans) - 1,
    )
    logits = segmenter.runner.run(reference.point_features, reference.point_cells, reference.motion_bev)
    expected = moving_probability(logits, CONTRACT.moving_class, CONTRACT.ignore_class)
    np.testing.assert_array_equal(result.moving_prob[reference.valid], expected)
    good = np.setdiff1d(np.arange(len(points)), bad)
    assert set(np.unique(result.labels[good])) <= {LABEL_STATIC, LABEL_MOVING, LABEL_UNKNOWN}


def test_threshold_changes_labels_not_probabilities(segmenter_path: Path) -> None:
    scans = street(9)
    low, high = (MotionSegmenter.from_path(segmenter_path, moving_threshold=t) for t in (0.05, 0.95))
    for s in scans:
        a = low.process(s.points, s.pose, s.stamp)
        b = high.process(s.points, s.pose, s.stamp)
    np.testing.assert_array_equal(a.moving_prob, b.moving_prob)
    assert np.count_nonzero(a.labels == LABEL_MOVING) > np.count_nonzero(b.labels == LABEL_MOVING)


def test_bag_loop_resets_the_window(segmenter_path: Path) -> None:
    segmenter = MotionSegmenter.from_path(segmenter_path)
    scans = street(9)
    for s in scans:
        segmenter.process(s.points, s.pose, s.stamp)
    again = segmenter.process(scans[0].points, scans[0].pose, scans[0].stamp)
    assert again.reset_reason is not None and "back in time" in again.reset_reason
    assert again.window_fill == (0, 4)
    assert np.count_nonzero(again.labels == LABEL_MOVING) == 0  # no motion evidence yet


def test_empty_and_malformed_scans(segmenter_path: Path) -> None:
    segmenter = MotionSegmenter.from_path(segmenter_path)
    empty = segmenter.process(np.zeros((0, 4), np.float32), np.eye(4), 0.0)
    assert empty.labels.shape == (0,) and empty.moving_prob.shape == (0,)
    all_nan = segmenter.process(np.full((10, 4), np.nan, np.float32), np.eye(4), 0.1)
    assert np.all(all_nan.labels == LABEL_UNKNOWN)
    xyz_only = segmenter.process(street(1)[0].points[:, :3].astype(np.float64), np.eye(4), 0.2)
    assert np.count_nonzero(xyz_only.labels != LABEL_UNKNOWN) > 0
    with pytest.raises(InvalidScanError, match=r"\(N, 3\) or \(N, 4\).*\(10,\)"):
        segmenter.process(np.zeros(10), np.eye(4), 0.3)


def test_real_kitti_scans_get_one_label_per_point_in_order(segmenter_path: Path, kitti00_root: Path) -> None:
    sequence = open_sequence(kitti00_root, 0)
    segmenter = MotionSegmenter.from_path(segmenter_path)
    for frame, pose, stamp in zip(sequence.frames, sequence.poses, sequence.times, strict=True):
        points = sequence.read_scan(frame)
        result = segmenter.process(points, pose, stamp)
        assert result.labels.shape == result.moving_prob.shape == (len(points),)
        # The grid lies in the canonical frame, which the scan's own ground fit defines.
        assert result.ground is not None and result.ground.confident
        assert result.ground.height == pytest.approx(1.77, abs=0.05)  # KITTI's HDL-64: 1.73 m
        assert result.ground.tilt_deg < 3.0
        moved = transform(points[:, :3], segmenter.ground.to_canonical())
        rho = np.hypot(moved[:, 0], moved[:, 1])
        in_grid = (rho >= CONTRACT.grid.rho_min) & (rho < CONTRACT.grid.rho_max)
        np.testing.assert_array_equal(result.labels == LABEL_UNKNOWN, ~in_grid)
        assert result.num_valid == in_grid.sum()
    assert result.window_full


def test_voxel_inputs_label_real_kitti_scans_like_every_point_inputs(
    tmp_path: Path, kitti00_root: Path
) -> None:
    nano_grid = ModelContract(grid=GRIDS["lite"], preset="oracle")
    voxel_contract = nano_grid.model_copy(update={"input_options": InputOptions(points="voxel")})
    every = MotionSegmenter.from_path(write_oracle_model(tmp_path / "every.onnx", nano_grid))
    thinned = MotionSegmenter.from_path(write_oracle_model(tmp_path / "voxel.onnx", voxel_contract))
    sequence = open_sequence(kitti00_root, 0)
    rows = []
    for frame, pose, stamp in zip(sequence.frames, sequence.poses, sequence.times, strict=True):
        points = sequence.read_scan(frame)
        reference = every.process(points, pose, stamp)
        result = thinned.process(points, pose, stamp)
        assert result.labels.shape == (len(points),)
        # The window holds the same thinned scan either way.
        np.testing.assert_array_equal(thinned.window.newest.points, every.window.newest.points)
        # A point takes its 0.15 m cube's first point's output: the same polar cell but at cell borders
        # (also the grid's outer border, where a cube can straddle the range limit).
        unknown = result.labels == LABEL_UNKNOWN
        assert np.count_nonzero(unknown != (reference.labels == LABEL_UNKNOWN)) < 1e-3 * len(points)
        assert result.num_valid == len(points) - np.count_nonzero(unknown)
        # With 0.30 m range bins half the cubes straddle a border: ~1 % of the points take a neighbour
        # cell's label, all of them at the edge of a moving region.
        agree = np.mean(result.labels == reference.labels)
        assert agree > 0.98
        rows.append(len(thinned.window.newest.points) / len(points))
    assert result.window_full and np.count_nonzero(result.labels == LABEL_MOVING) > 0
    assert np.median(rows) < 0.5  # an HDL-64 scan has two to three points per occupied cube


@pytest.mark.parametrize("points", ["all", "voxel"])
def test_streaming_outputs_equal_the_features_of_random_access(
    tmp_path: Path, kitti00_root: Path, points: str
) -> None:
    """Scan by scan, the segmenter gives exactly what the training data's features_at gives."""
    contract = ModelContract(grid=GRIDS["lite"], preset="oracle", input_options=InputOptions(points=points))
    segmenter = MotionSegmenter.from_path(write_oracle_model(tmp_path / "oracle.onnx", contract))
    sequence = open_sequence(kitti00_root, 0)
    scans = [sequence.read_scan(frame) for frame in sequence.frames]
    scans[6] = scans[6].copy()
    scans[6][::50, 1] = np.nan
    for k, (pose, stamp) in enumerate(zip(sequence.poses, sequence.times, strict=True)):
        result = segmenter.process(scans[k], pose, stamp)
        reference = features_at(
            contract.grid,
            contract.motion,
            scans,
            sequence.poses,
            sequence.times,
            k,
            segmenter.ground.to_canonical(),
            contract.input_options,
        )
        logits = segmenter.runner.run(reference.point_features, reference.point_cells, reference.motion_bev)
        expected = moving_probability(logits, contract.moving_class, contract.ignore_class)
        np.testing.assert_array_equal(result.moving_prob, reference.spread(expected, 0.0, np.float32))
    assert result.window_full and np.count_nonzero(result.labels == LABEL_MOVING) > 0
