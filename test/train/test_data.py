"""Training samples: runtime-identical features, window-consistent augmentation, voxel targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scenes import write_street_sequence

from kdmos_ros.io.semantickitti import KDMOS_MOVING, KDMOS_STATIC, kdmos_labels, open_sequence
from kdmos_ros.pipeline.contract import InputOptions, ModelContract
from kdmos_ros.pipeline.features import features_at
from kdmos_ros.pipeline.grid import GRIDS
from kdmos_ros.train import data
from kdmos_ros.train.data import AugmentConfig, Collate, MosDataset, voxel_labels

CONTRACT = ModelContract(grid=GRIDS["lite"])


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_street_sequence(tmp_path_factory.mktemp("data"), "00", 12)


def test_samples_carry_the_runtime_features(root: Path) -> None:
    dataset = MosDataset(root, ["00"], CONTRACT)
    sample = dataset[9]
    sequence = open_sequence(root, "00")
    scans = [sequence.read_scan(f) for f in sequence.frames]
    reference = features_at(CONTRACT.grid, CONTRACT.motion, scans, sequence.poses, sequence.times, 9)
    assert (sample.sequence, sample.frame) == ("00", 9)
    np.testing.assert_array_equal(sample.point_features, reference.point_features)
    np.testing.assert_array_equal(sample.point_cells, reference.point_cells)
    np.testing.assert_array_equal(sample.motion_bev, reference.motion_bev[0])
    assert len(sample.labels) == len(sample.point_features)
    assert set(np.unique(sample.labels)) == {KDMOS_STATIC, KDMOS_MOVING}


def test_augmentation_moves_the_whole_window_together(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = MosDataset(root, ["00"], CONTRACT)[9]
    # A rotation by exactly 10 azimuth bins must roll the motion BEV by 10 columns.
    angle = 10 * CONTRACT.grid.cell_size[1]
    matrix = np.eye(4)
    matrix[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    monkeypatch.setattr(data, "augmentation", lambda rng, config: matrix)
    sample = MosDataset(root, ["00"], CONTRACT, augment=AugmentConfig())[9]
    agree = np.isclose(sample.motion_bev, np.roll(plain.motion_bev, 10, axis=2), atol=1e-4).mean()
    assert agree > 0.995
    assert np.count_nonzero(sample.motion_bev) > 0
    # Labels travel with their points.
    assert np.bincount(sample.labels).tolist() == np.bincount(plain.labels).tolist()


def test_random_augmentation_keeps_static_structure_static(root: Path) -> None:
    config = AugmentConfig()
    dataset = MosDataset(root, ["00"], CONTRACT, augment=config, seed=3)
    plain = MosDataset(root, ["00"], CONTRACT)
    for item in (8, 9, 10):
        augmented, reference = dataset[item], plain[item]
        # If the window were not moved consistently, the wall and ground would light up everywhere.
        assert np.count_nonzero(augmented.motion_bev) < 1.5 * np.count_nonzero(reference.motion_bev) + 20
    again = MosDataset(root, ["00"], CONTRACT, augment=config, seed=3)
    np.testing.assert_array_equal(dataset[8].point_features, again[8].point_features)
    dataset.set_epoch(1)
    assert not np.array_equal(dataset[8].point_features, again[8].point_features)


def test_frames_with_few_moving_points_can_be_dropped(root: Path) -> None:
    everything = MosDataset(root, ["00"], CONTRACT)
    busy = MosDataset(root, ["00"], CONTRACT, min_moving_points=10**9)
    assert len(everything) == 12 and len(busy) == 0


def test_voxel_labels_take_the_majority_and_skip_ignored() -> None:
    cells = np.array([[1, 2, 0], [1, 2, 0], [1, 2, 0], [3, 4, 1], [3, 4, 1], [5, 5, 2]])
    labels = np.array([3, 3, 1, 0, 2, 0])
    grid = voxel_labels(cells, labels, (6, 6, 3), 4)
    assert grid.shape == (3, 6, 6)
    assert grid[0, 1, 2] == 3  # two votes moving, one static
    assert grid[1, 3, 4] == 2  # the ignored point does not vote
    assert grid[2, 5, 5] == 0  # only an ignored point: ignore
    assert np.count_nonzero(grid) == 2


def test_collate_adds_the_sample_index(root: Path) -> None:
    dataset = MosDataset(root, ["00"], CONTRACT)
    batch = Collate(CONTRACT)([dataset[5], dataset[9]])
    sizes = [len(dataset[5].labels), len(dataset[9].labels)]
    assert batch.point_cells.shape == (sum(sizes), 4)
    assert batch.point_cells[: sizes[0], 0].eq(0).all() and batch.point_cells[sizes[0] :, 0].eq(1).all()
    n_rho, n_phi, n_z = CONTRACT.grid.shape
    assert batch.motion_bev.shape == (2, CONTRACT.motion.channels, n_rho, n_phi)
    assert batch.voxel_labels.shape == (2, n_z, n_rho, n_phi)
    assert batch.keys == [("00", 5), ("00", 9)]


def test_inverse_frequency_weights_by_hand() -> None:
    from kdmos_ros.train.data import inverse_frequency_weights

    # ignore, static, movable, moving: frequencies over labelled points 0.9, 0.09, 0.01.
    weights = inverse_frequency_weights(np.array([500, 900, 90, 10]), epsilon=0.001)
    assert weights[0] == 0.0
    assert weights[1:] == pytest.approx([1 / 0.901, 1 / 0.091, 1 / 0.011], rel=1e-6)


def test_future_samples_add_the_motion_bev_of_the_next_scans(root: Path) -> None:
    causal = MosDataset(root, ["00"], CONTRACT)
    both = MosDataset(root, ["00"], CONTRACT, future=True)
    channels = CONTRACT.motion.channels
    for item in (4, len(both) - 1):
        plain, sample = causal[item], both[item]
        np.testing.assert_array_equal(sample.point_features, plain.point_features)
        np.testing.assert_array_equal(sample.valid, plain.valid)
        assert sample.motion_bev.shape == (2 * channels, *plain.motion_bev.shape[1:])
        np.testing.assert_array_equal(sample.motion_bev[:channels], plain.motion_bev)
        np.testing.assert_array_equal(
            sample.motion_bev[channels:],
            data.future_motion_bev(both.window(item), CONTRACT.grid, CONTRACT.motion),
        )
        future = sample.motion_bev[channels:]
        if item == len(both) - 1:
            assert not future.any()  # nothing comes after the last scan
            continue
        # The moving box will leave the cells it occupies now: their future channels light up.
        moving = sample.point_cells[sample.labels == KDMOS_MOVING]
        lit = np.abs(future[:, moving[:, 0], moving[:, 1]]).sum(axis=0) > 0
        assert lit.mean() > 0.5


def test_samples_say_which_scan_rows_they_hold(root: Path) -> None:
    sample = MosDataset(root, ["00"], CONTRACT)[6]
    sequence = open_sequence(root, "00")
    scans = [sequence.read_scan(f) for f in sequence.frames]
    reference = features_at(CONTRACT.grid, CONTRACT.motion, scans, sequence.poses, sequence.times, 6)
    np.testing.assert_array_equal(sample.valid, reference.valid)
    assert int(sample.valid.sum()) == len(sample.labels)


def test_voxel_samples_hold_one_row_per_cube_and_say_where_each_point_goes(root: Path) -> None:
    contract = CONTRACT.model_copy(update={"input_options": InputOptions(points="voxel")})
    sample = MosDataset(root, ["00"], contract)[6]
    every = MosDataset(root, ["00"], CONTRACT)[6]
    assert sample.source is not None and every.source is None
    assert int(sample.valid.sum()) == len(sample.labels) == len(sample.point_features) < len(every.labels)
    # Each row is the label of the scan point it is, and every labelled point points at a row.
    sequence = open_sequence(root, "00")
    semantic, _ = sequence.read_labels(6)
    np.testing.assert_array_equal(sample.labels, kdmos_labels(semantic)[sample.valid])
    labelled = sample.source >= 0
    np.testing.assert_array_equal(sample.source[sample.valid], np.arange(len(sample.labels)))
    assert labelled.sum() >= every.valid.sum() - 0.001 * len(every.valid)
