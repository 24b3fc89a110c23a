"""Teacher samples: K scans in the current frame, scan index column, labels on the current scan only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scenes import BOX_SPEED, PERIOD, write_street_sequence

from kdmos_ros.io.semantickitti import KDMOS_IGNORE, KDMOS_MOVING, KDMOS_STATIC, kdmos_labels, open_sequence
from kdmos_ros.train.data import AugmentConfig, augmentation
from kdmos_ros.train.teacher_data import TeacherDataset, collate_teacher


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_street_sequence(tmp_path_factory.mktemp("data"), "00", 10)


def _keys(xyz: np.ndarray) -> set[tuple[int, int, int]]:
    return set(map(tuple, np.round(xyz / 0.02).astype(np.int64).tolist()))


def test_past_scans_land_on_the_current_static_structure(root: Path) -> None:
    sample = TeacherDataset(root, ["00"], num_scans=4)[9]
    sequence = open_sequence(root, "00")
    scan = sequence.read_scan(9)
    assert (sample.sequence, sample.frame) == ("00", 9)
    scan_index = sample.points[:, 4]
    assert sorted(np.unique(scan_index).tolist()) == [0, 1, 2, 3]
    current = sample.points[scan_index == 0]
    # The current scan comes first, unchanged, in input order.
    np.testing.assert_allclose(current[:, :4], scan[sample.current_finite], atol=1e-4)
    assert np.all(scan_index[: len(current)] == 0)
    # Labels: KDMOS classes on the current scan, ignore on the past scans.
    semantic, _ = sequence.read_labels(9)
    np.testing.assert_array_equal(
        sample.labels[: len(current)], kdmos_labels(semantic)[sample.current_finite]
    )
    assert np.all(sample.labels[len(current) :] == KDMOS_IGNORE)
    # Static points of scan t-3 coincide with the current scan's points; moving ones do not.
    past_semantic, _ = sequence.read_labels(6)
    past_labels = kdmos_labels(past_semantic)
    past = sample.points[scan_index == 3, :3]
    here = _keys(current[:, :3])
    static_hits = np.mean([k in here for k in _keys(past[past_labels == KDMOS_STATIC])])
    assert static_hits > 0.5
    # The box's past points sit where the box was three scans ago: BOX_SPEED · 3 · PERIOD behind.
    box_now = current[sample.labels[: len(current)] == KDMOS_MOVING, 0].max()
    box_then = past[past_labels == KDMOS_MOVING, 0].max()
    assert box_now - box_then == pytest.approx(BOX_SPEED * 3 * PERIOD, abs=0.15)


def test_augmentation_moves_all_scans_rigidly(root: Path) -> None:
    config = AugmentConfig(mounting_tilt_std=0.0, mounting_height_std=0.0)  # A alone, no mounting error
    plain = TeacherDataset(root, ["00"], num_scans=3)[5]
    augmented = TeacherDataset(root, ["00"], num_scans=3, augment=config, seed=7)[5]
    matrix = augmentation(np.random.default_rng([7, 0, 5]), config)
    expected = plain.points[:, :3] @ matrix[:3, :3].T + matrix[:3, 3]
    np.testing.assert_allclose(augmented.points[:, :3], expected, atol=1e-3)
    np.testing.assert_array_equal(augmented.points[:, 3:], plain.points[:, 3:])


def test_max_points_drops_only_past_points_and_collate_stacks(root: Path) -> None:
    full = TeacherDataset(root, ["00"], num_scans=8)[7]
    n_current = int(np.count_nonzero(full.points[:, 4] == 0))
    capped = TeacherDataset(root, ["00"], num_scans=8, max_points=n_current + 100)[7]
    assert len(capped.points) == n_current + 100
    np.testing.assert_array_equal(capped.points[:n_current], full.points[:n_current])
    first = TeacherDataset(root, ["00"], num_scans=2)[0]
    assert np.all(first.points[:, 4] == 0)  # no scan before the first
    batch = collate_teacher([first, capped])
    assert batch.points.shape == (len(first.points) + len(capped.points), 5)
    assert batch.batch.tolist().count(1) == len(capped.points)
    assert batch.keys == [("00", 0), ("00", 7)]
    assert batch.labels.dtype == torch.int64


def test_motion_context_columns_are_the_motion_bev_of_each_points_cell(root: Path) -> None:
    from kdmos_ros.pipeline.contract import MotionConfig
    from kdmos_ros.pipeline.features import features_at, point_inputs
    from kdmos_ros.pipeline.grid import PolarGrid
    from kdmos_ros.train.models.teacher import MotionContext

    context = MotionContext(grid=PolarGrid(n_rho=64, n_phi=90, n_z=8))
    plain = TeacherDataset(root, ["00"], num_scans=3)[9]
    sample = TeacherDataset(root, ["00"], num_scans=3, context=context)[9]
    channels = MotionConfig().channels
    assert sample.points.shape == (len(plain.points), 5 + channels)
    assert np.array_equal(sample.points[:, :5], plain.points)

    sequence = open_sequence(root, "00")
    scans = [sequence.read_scan(frame) for frame in sequence.frames]
    bev = features_at(context.grid, context.motion, scans, sequence.poses, sequence.times, 9).motion_bev[0]
    valid, _, cells = point_inputs(context.grid, sample.points[:, :4])
    assert np.array_equal(sample.points[valid, 5:], bev[:, cells[:, 0], cells[:, 1]].T)
    assert not sample.points[~valid, 5:].any()
    # The moving box lights the motion channels up on its own points and nowhere near most of the rest.
    moving = sample.labels == KDMOS_MOVING
    lit = np.abs(sample.points[:, 5:]).sum(axis=1) > 0
    assert lit[moving].mean() > 0.5 and lit[sample.labels == KDMOS_STATIC].mean() < 0.2


def test_future_context_is_the_motion_bev_of_the_sequence_played_backwards(tmp_path: Path) -> None:
    from scenes import street

    from kdmos_ros.io.semantickitti import create_sequence
    from kdmos_ros.pipeline.contract import MotionConfig
    from kdmos_ros.pipeline.features import features_at
    from kdmos_ros.pipeline.grid import PolarGrid
    from kdmos_ros.train.models.teacher import MotionContext

    n = 10
    root = write_street_sequence(tmp_path, "00", n)
    # The same drive written backwards in time, as an independent source of the "future" features.
    scans = street(n)[::-1]
    writer = create_sequence(tmp_path, "01")
    for frame, scan in enumerate(scans):
        writer.write_scan(frame, scan.points)
        writer.write_labels(
            frame, np.full(len(scan.points), 40, dtype=np.uint16), np.zeros(len(scan.points), dtype=np.uint16)
        )
    writer.write_poses(np.stack([np.linalg.inv(scans[0].pose) @ s.pose for s in scans]))
    writer.write_calib()
    writer.write_times([scans[0].stamp - s.stamp for s in scans])

    grid = PolarGrid(n_rho=64, n_phi=90, n_z=8)
    causal = TeacherDataset(root, ["00"], num_scans=2, context=MotionContext(grid=grid))
    both = TeacherDataset(root, ["00"], num_scans=2, context=MotionContext(grid=grid, future=True))
    channels = MotionConfig().channels
    backwards = open_sequence(tmp_path, "01")
    reversed_scans = [backwards.read_scan(frame) for frame in backwards.frames]
    for frame in (3, n - 1):
        sample, plain = both[frame], causal[frame]
        assert sample.points.shape[1] == 5 + 2 * channels
        np.testing.assert_array_equal(sample.points[:, : 5 + channels], plain.points)
        assert sample.bev is not None
        past, future = sample.bev.motion_bev[:channels], sample.bev.motion_bev[channels:]
        np.testing.assert_array_equal(past, plain.bev.motion_bev)
        expected = features_at(
            grid, MotionConfig(), reversed_scans, backwards.poses, backwards.times, n - 1 - frame
        ).motion_bev[0]
        np.testing.assert_allclose(future, expected, atol=1e-4)
        if frame == n - 1:
            assert not future.any()  # nothing comes after the last scan
        else:
            # The box will leave cells it occupies now: the future channels light up on its points.
            moving = sample.labels == KDMOS_MOVING
            assert (np.abs(sample.points[moving, 5 + channels :]).sum(axis=1) > 0).mean() > 0.5


def test_bev_inputs_are_the_student_inputs_of_the_current_scan(root: Path) -> None:
    from kdmos_ros.pipeline.features import features_at
    from kdmos_ros.pipeline.grid import PolarGrid
    from kdmos_ros.train.models.teacher import MotionContext

    context = MotionContext(grid=PolarGrid(n_rho=64, n_phi=90, n_z=8))
    first, second = (TeacherDataset(root, ["00"], num_scans=3, context=context)[i] for i in (4, 9))
    assert first.bev is not None and second.bev is not None
    sequence = open_sequence(root, "00")
    scans = [sequence.read_scan(frame) for frame in sequence.frames]
    features = features_at(context.grid, context.motion, scans, sequence.poses, sequence.times, 9)
    np.testing.assert_array_equal(second.bev.point_features, features.point_features)
    np.testing.assert_array_equal(second.bev.point_cells, features.point_cells)
    # Each BEV point's row holds that very point (x, y, z are feature columns 6, 7, 5).
    rows = second.points[second.bev.rows]
    np.testing.assert_allclose(rows[:, [0, 1, 2]], second.bev.point_features[:, [6, 7, 5]], atol=1e-5)
    assert np.all(rows[:, 4] == 0)

    batch = collate_teacher([first, second])
    assert batch.bev is not None
    assert batch.bev.motion_bev.shape == (2, *first.bev.motion_bev.shape)
    assert batch.bev.point_cells[:, 0].tolist() == [0] * len(first.bev.rows) + [1] * len(second.bev.rows)
    # Rows index the concatenated points: the second sample's rows are shifted past the first's points.
    offset_rows = batch.bev.rows[len(first.bev.rows) :].numpy()
    np.testing.assert_array_equal(offset_rows, second.bev.rows + len(first.points))
    assert torch.all(batch.batch[batch.bev.rows] == batch.bev.point_cells[:, 0])
