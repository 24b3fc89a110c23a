"""The point-transformer teacher: curve codes, grid sampling, patches, pooling, invariances, training."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from kdmos_ros.errors import KdmosError
from kdmos_ros.train.checkpoint import CheckpointError
from kdmos_ros.train.losses import segmentation_loss
from kdmos_ros.train.models.teacher import (
    PRESETS,
    BevInputs,
    GridPooling,
    GridUnpooling,
    PatchAttention,
    SerializedPositionEncoding,
    TeacherConfig,
    TeacherNet,
    build_teacher,
    coarsen,
    current_scan_mask,
    drop_path,
    find_grid_neighbours,
    grid_sample,
    hilbert_encode,
    load_teacher,
    patch_layout,
    preset_config,
    save_teacher,
    serialize,
    z_order_encode,
)

#: The full KDMOS student (StudentConfig preset "full"): 4 026 366 parameters.
FULL_STUDENT_PARAMETERS = 4_026_366

#: A three-level teacher small enough for fast tests; patches of 16 voxels so samples span several.
TINY = TeacherConfig(
    grid_size=0.5,
    enc_channels=(16, 32, 32),
    enc_depths=(1, 1, 1),
    enc_heads=(2, 2, 2),
    dec_channels=(16, 32),
    dec_depths=(1, 1),
    dec_heads=(2, 2),
    patch_size=16,
    drop_path=0.0,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: on a shared 2-core machine, thread hand-offs cost more than they save."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_points(count: int, seed: int, scans: int = 8, extent: float = 10.0) -> torch.Tensor:
    """[count, 5] points: x, y in ±extent, z in ±1, intensity in [0, 1), integer scan index."""
    generator = torch.Generator().manual_seed(seed)
    xyz = (torch.rand(count, 3, generator=generator) * 2 - 1) * torch.tensor([extent, extent, 1.0])
    intensity = torch.rand(count, 1, generator=generator)
    scan = torch.randint(0, scans, (count, 1), generator=generator).float()
    return torch.cat([xyz, intensity, scan], dim=1)


def tiny_model(seed: int = 0, config: TeacherConfig = TINY) -> TeacherNet:
    torch.manual_seed(seed)
    return TeacherNet(config).eval()


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- configuration -------------------------------------------------------------------------------------


def test_presets_are_larger_than_the_full_student() -> None:
    base, small = (parameters(build_teacher(name)) for name in ("base", "small"))
    assert base == 12_533_028
    assert small == 7_676_708
    assert base > small > FULL_STUDENT_PARAMETERS
    assert preset_config("small").grid_size > preset_config("base").grid_size == pytest.approx(0.09)
    assert PRESETS["base"].preset == "base"


def test_config_rejects_inconsistent_architectures() -> None:
    with pytest.raises(ValidationError, match="same non-zero length"):
        TeacherConfig(enc_channels=(32, 64), enc_depths=(1,), enc_heads=(1, 1))
    with pytest.raises(ValidationError, match="one per pooling"):
        TeacherConfig.model_validate({**TINY.model_dump(), "dec_channels": (16,)})
    with pytest.raises(ValidationError, match="not divisible"):
        TeacherConfig.model_validate({**TINY.model_dump(), "enc_heads": (3, 2, 2)})
    with pytest.raises(ValidationError):
        TeacherConfig.model_validate({**TINY.model_dump(), "orders": ("z", "peano")})
    with pytest.raises(ValidationError, match="odd"):
        TeacherConfig.model_validate({**TINY.model_dump(), "cpe_window": 4})
    with pytest.raises(KdmosError, match="base, small"):
        preset_config("huge")


# --- serialization -------------------------------------------------------------------------------------


def test_z_order_matches_a_brute_force_bit_interleave() -> None:
    generator = torch.Generator().manual_seed(1)
    coords = torch.randint(0, 1 << 16, (300, 3), generator=generator)
    coords[:4] = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [65535, 65535, 65535]])
    expected = []
    for x, y, z in coords.tolist():
        code = 0
        for bit in range(16):
            code |= (
                ((x >> bit) & 1) << (3 * bit + 2)
                | ((y >> bit) & 1) << (3 * bit + 1)
                | ((z >> bit) & 1) << (3 * bit)
            )
        expected.append(code)
    assert z_order_encode(coords).tolist() == expected
    assert z_order_encode(coords[:4]).tolist() == [0, 4, 2, (1 << 48) - 1]


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_hilbert_is_a_bijection_whose_consecutive_codes_are_grid_neighbours(depth: int) -> None:
    side = 1 << depth
    cube = torch.tensor(list(itertools.product(range(side), repeat=3)))
    codes = hilbert_encode(cube, depth)
    assert sorted(codes.tolist()) == list(range(side**3))
    path = cube[torch.argsort(codes)]
    steps = (path[1:] - path[:-1]).abs().sum(dim=1)
    assert steps.tolist() == [1] * (side**3 - 1)
    assert path[0].tolist() == [0, 0, 0]


def test_hilbert_at_full_depth_stays_in_48_bits_and_is_injective() -> None:
    generator = torch.Generator().manual_seed(2)
    coords = torch.unique(torch.randint(0, 1 << 16, (2000, 3), generator=generator), dim=0)
    codes = hilbert_encode(coords, 16)
    assert codes.min() >= 0 and codes.max() < 1 << 48
    assert codes.unique().numel() == coords.shape[0]


def test_serialize_keeps_samples_apart_and_scans_of_a_cell_together() -> None:
    coords = torch.tensor([[5, 1, 0], [0, 0, 0], [5, 1, 0], [9, 9, 9], [0, 0, 0]])
    batch = torch.tensor([0, 1, 0, 0, 0])
    scan = torch.tensor([3, 0, 1, 0, 7])
    for order in ("z", "z-trans", "hilbert", "hilbert-trans"):
        code = serialize(coords, batch, order, depth=4, scan=scan, scan_bits=3)
        assert code[1] > code[[0, 2, 3, 4]].max()  # sample 1 after all of sample 0
        assert code[0] - code[2] == 2  # same cell, scans 3 and 1: only the low bits differ
    swapped = coords[:, [1, 0, 2]]
    assert torch.equal(serialize(coords, batch, "z-trans", 4), serialize(swapped, batch, "z", 4))
    assert torch.equal(serialize(coords, batch, "hilbert-trans", 4), serialize(swapped, batch, "hilbert", 4))


# --- grid sampling, patches, pooling -------------------------------------------------------------------


def test_grid_sample_averages_per_sample_scan_and_cell() -> None:
    points = torch.tensor(
        [
            [0.1, 0.1, 0.1, 0.2, 0.0],
            [0.3, 0.2, 0.4, 0.6, 0.0],  # same cell and scan as row 0: averaged
            [0.2, 0.2, 0.2, 0.5, 1.0],  # same cell, other scan: its own voxel
            [0.2, 0.2, 0.2, 0.5, 0.0],  # same cell and scan, other sample
            [1.7, -3.2, 0.0, 0.1, 0.0],
        ]
    )
    batch = torch.tensor([0, 0, 0, 1, 0])
    voxels = grid_sample(points, batch, TINY)
    assert voxels.features.shape == (4, 5)
    inv = voxels.inverse
    assert inv[0] == inv[1] and len({inv[0].item(), inv[2].item(), inv[3].item(), inv[4].item()}) == 4
    assert torch.allclose(voxels.features[inv[0]], points[:2].mean(dim=0))
    assert voxels.scan[inv].tolist() == [0, 0, 1, 0, 0]
    assert voxels.batch[inv].tolist() == batch.tolist()
    # Cells are relative to the sample's origin, snapped to the coarsest cell (4 fine cells of 0.5 m).
    assert voxels.coords.min() >= 0
    assert voxels.coords[inv[0]].tolist() == [0, 8, 0]  # sample 0's lowest cell is (0, -7, 0)
    assert voxels.coords[inv[4]].tolist() == [3, 1, 0]
    assert voxels.coords[inv[3]].tolist() == [0, 0, 0]


def test_patch_layout_pads_each_sample_separately() -> None:
    counts = torch.tensor([37, 5, 0, 16])
    batch = torch.repeat_interleave(torch.arange(4), counts)
    order = torch.argsort(batch * 1000 + torch.randperm(batch.numel()))  # grouped by sample, shuffled within
    patches = patch_layout(order, counts, patch_size=16)
    assert patches.patch_size == 16 and patches.num_patches == 3 + 1 + 0 + 1
    assert patches.valid.sum() == batch.numel()
    assert torch.equal(patches.gather[patches.slot], torch.arange(batch.numel()))
    slot_batch = batch[patches.gather].view(-1, 16)
    slot_valid = patches.valid.view(-1, 16)
    for row, valid in zip(slot_batch, slot_valid, strict=True):
        assert row[valid].unique().numel() == 1  # no patch holds two samples
    assert patches.key_mask is not None and patches.key_mask.shape == (5, 1, 1, 16)
    # All samples smaller than the patch: K shrinks to the largest, which changes no partition.
    small = patch_layout(torch.arange(7), torch.tensor([4, 3]), patch_size=16)
    assert small.patch_size == 4 and small.num_patches == 2


def test_padded_patches_attend_like_unpadded_ones() -> None:
    torch.manual_seed(3)
    attention = PatchAttention(channels=8, heads=2).eval()
    counts = torch.tensor([16 + 16 + 5, 3])  # sample 0: two full patches and a padded one
    size = int(counts.sum())
    x = torch.randn(size, 8)
    batch = torch.repeat_interleave(torch.arange(2), counts)
    order = torch.argsort(batch * 1000 + torch.randperm(size))
    patches = patch_layout(order, counts, patch_size=16)
    out = attention(x, patches)

    qkv = attention.qkv(x)
    expected = torch.empty_like(x)
    chunks = [order[0:16], order[16:32], order[32:37], order[37:40]]
    for chunk in chunks:
        q, k, v = qkv[chunk].view(len(chunk), 3, 2, 4).permute(1, 2, 0, 3)
        expected[chunk] = attention.proj(
            F.scaled_dot_product_attention(q, k, v).transpose(0, 1).reshape(-1, 8)
        )
    assert torch.allclose(out, expected, atol=1e-6)


def test_positional_encoding_is_a_depthwise_conv_over_the_neighbours_it_finds() -> None:
    """With a window spanning the whole patch every grid neighbour is found: a dense conv3d per sample.
    Sample 1 is small, so its patch is padded with slots that read a voxel of sample 0."""
    torch.manual_seed(5)
    side, channels = 4, 3
    cube = torch.tensor(list(itertools.product(range(side), repeat=3)))
    samples = [cube[torch.rand(cube.shape[0]) < 0.7], cube[:6]]  # empty cells contribute nothing
    coords = torch.cat(samples)
    batch = torch.repeat_interleave(torch.arange(2), torch.tensor([len(c) for c in samples]))
    x = torch.randn(coords.shape[0], channels)
    order = torch.argsort(serialize(coords, batch, "hilbert", depth=2))
    patches = patch_layout(order, torch.bincount(batch), patch_size=64)
    assert patches.key_mask is not None
    find_grid_neighbours(patches, coords, reach=63)
    encoding = SerializedPositionEncoding(channels)
    out = encoding.aggregate(x, patches)

    kernel = encoding.weight.T.reshape(channels, 1, 3, 3, 3)
    for sample in range(2):
        rows = batch == sample
        c = coords[rows]
        dense = torch.zeros(1, channels, side, side, side)
        dense[0, :, c[:, 0], c[:, 1], c[:, 2]] = x[rows].T
        expected = F.conv3d(dense, kernel, encoding.bias, padding=1, groups=channels)[0]
        assert torch.allclose(out[rows], expected[:, c[:, 0], c[:, 1], c[:, 2]].T, atol=1e-5)

    # A short window finds fewer neighbours, never wrong ones; the two directions mirror each other.
    find_grid_neighbours(patches, coords, reach=2)
    assert len(patches.neighbours) == 2
    for ahead, behind in patches.neighbours:
        assert torch.equal(torch.where(ahead < 27, 26 - ahead, 27), behind)


def test_coarsening_and_pooling_invert_each_other() -> None:
    coords = torch.tensor([[0, 0, 0], [1, 1, 1], [2, 0, 1], [3, 1, 0], [0, 1, 0], [5, 5, 5]])
    batch = torch.tensor([0, 0, 0, 0, 1, 0])
    coarse, coarse_batch, inverse = coarsen(coords, batch, depth=4)
    assert coarse.shape[0] == 4  # {(0,0,0), (1,0,0), (2,2,2)} in sample 0, (0,0,0) in sample 1
    assert torch.equal(coarse[inverse], coords // 2)
    assert torch.equal(coarse_batch[inverse], batch)
    assert inverse[0] == inverse[1] and inverse[2] == inverse[3] and inverse[0] != inverse[4]

    torch.manual_seed(4)
    pooling = GridPooling(3, 6, "max")
    x = torch.randn(6, 3)
    pooled = pooling(x, inverse, coarse.shape[0])
    projected = pooling.proj(x)
    manual = torch.stack([projected[inverse == c].max(dim=0).values for c in range(coarse.shape[0])])
    assert torch.allclose(pooled, pooling.act(pooling.norm(manual)))

    unpooling = GridUnpooling(6, 3, 5)
    fine = unpooling(pooled, x, inverse)
    from_coarse = fine - unpooling.proj_skip(x)
    assert fine.shape == (6, 5)
    assert torch.allclose(from_coarse, unpooling.proj(pooled)[inverse], atol=1e-6)
    assert torch.allclose(from_coarse[0], from_coarse[1]) and not torch.allclose(
        from_coarse[0], from_coarse[2]
    )


# --- the network ---------------------------------------------------------------------------------------


def test_one_row_per_point_and_identical_rows_within_a_voxel() -> None:
    model = tiny_model()
    points = random_points(600, seed=5)
    twins = points[:50].clone()
    twins[:, :3] = (torch.floor(twins[:, :3] / 0.5) + 0.25) * 0.5  # inside each original's cell...
    points[:50, :3] = (torch.floor(points[:50, :3] / 0.5) + 0.75) * 0.5  # ...and so is the original
    points = torch.cat([points, twins])
    batch = torch.cat([torch.zeros(300, dtype=torch.long), torch.ones(300, dtype=torch.long)])
    batch = torch.cat([batch, batch[:50]])
    with torch.no_grad():
        out = model(points, batch)
    assert out.logits.shape == (650, 4) and out.features.shape == (650, model.feature_dim)
    assert torch.isfinite(out.logits).all()
    assert torch.equal(out.logits[:50], out.logits[600:])
    assert torch.equal(out.features[:50], out.features[600:])
    assert not torch.allclose(out.logits[:50], out.logits[50:100])

    current = current_scan_mask(points)
    selected = out.select(current)
    assert selected.logits.shape[0] == int((points[:, 4] == 0).sum()) > 0
    assert torch.equal(selected.features, out.features[points[:, 4] == 0])


def test_samples_do_not_influence_each_other() -> None:
    model = tiny_model()
    sample0 = random_points(700, seed=6)  # spans several 16-voxel patches at every level
    outputs = []
    for seed, count in ((7, 300), (8, 900)):
        sample1 = random_points(count, seed=seed, extent=25.0)
        points = torch.cat([sample1[: count // 2], sample0, sample1[count // 2 :]])  # unsorted batch
        batch = torch.cat([torch.ones(count // 2), torch.zeros(700), torch.ones(count - count // 2)]).long()
        with torch.no_grad():
            outputs.append(model(points, batch).logits[batch == 0])
    assert torch.allclose(outputs[0], outputs[1], atol=1e-5)


def test_shuffling_the_input_points_permutes_the_outputs() -> None:
    model = tiny_model()
    points = random_points(800, seed=9)
    batch = torch.randint(0, 3, (800,), generator=torch.Generator().manual_seed(9))
    permutation = torch.randperm(800, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        out = model(points, batch)
        shuffled = model(points[permutation], batch[permutation])
    assert torch.allclose(shuffled.logits, out.logits[permutation], atol=1e-5)
    assert torch.allclose(shuffled.features, out.features[permutation], atol=1e-5)


def test_eval_is_deterministic_and_training_follows_the_generator() -> None:
    config = TeacherConfig.model_validate({**TINY.model_dump(), "drop_path": 0.2})
    model = tiny_model(config=config)
    points, batch = random_points(500, seed=11), torch.zeros(500, dtype=torch.long)
    with torch.no_grad():
        assert torch.equal(model(points, batch).logits, model(points, batch).logits)
        model.train()
        runs = [model(points, batch, generator=torch.Generator().manual_seed(s)).logits for s in (0, 0, 1)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.allclose(runs[0], runs[2])  # another order shuffle / drop path draw


def test_drop_path_drops_whole_samples() -> None:
    batch = torch.arange(64).repeat_interleave(5)
    x = torch.ones(batch.numel(), 3)
    out = drop_path(x, 0.5, batch, 64, torch.Generator().manual_seed(0))
    per_sample = out.view(64, 15)
    assert torch.equal(per_sample, per_sample[:, :1].expand(-1, 15))  # one draw per sample
    assert set(per_sample[:, 0].tolist()) == {0.0, 2.0}  # dropped, or kept and rescaled


def test_a_few_steps_fit_a_toy_problem() -> None:
    """Moving = current-scan points with x > 0; static otherwise; a tenth unlabelled."""
    model = tiny_model(seed=12).train()
    points = random_points(1500, seed=12, scans=4)
    batch = (torch.arange(1500) % 2).long()
    labels = torch.where((points[:, 4] == 0) & (points[:, 0] > 0), 3, 1)
    labels[::10] = 0
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(40):
        loss = segmentation_loss(model(points, batch, generator=generator).logits, labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    # Predicting the class prior alone plateaus near 0.95 (CE ≈ 0.38 + Lovász ≈ 0.56).
    assert sum(losses[-5:]) / 5 < 0.5 < sum(losses[:3]) / 3, losses


def test_inputs_are_validated() -> None:
    model = tiny_model()
    points = random_points(20, seed=13)
    batch = torch.zeros(20, dtype=torch.long)
    with pytest.raises(ValueError, match=r"\[N, 5\]"):
        model(points[:, :4], batch)
    with pytest.raises(ValueError, match="integer"):
        model(points, batch.float())
    bad = points.clone()
    bad[0, 4] = 8.0
    with pytest.raises(ValueError, match="scan indices"):
        model(bad, batch)
    bad[0, 4], bad[1, 0] = 0.0, float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model(bad, batch)


def test_bfloat16_autocast_runs() -> None:
    model = tiny_model().train()
    points, batch = random_points(300, seed=14), torch.zeros(300, dtype=torch.long)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(points, batch, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.logits.float()).all()
    out.logits.float().sum().backward()
    assert all(p.grad is not None for p in model.head.parameters())


def test_checkpoint_round_trip(tmp_path) -> None:
    model = tiny_model(seed=15)
    path = save_teacher(tmp_path / "teacher.pt", model, epoch=3)
    loaded, extra = load_teacher(path)
    assert extra == {"epoch": 3} and loaded.config == model.config and not loaded.training
    points, batch = random_points(200, seed=15), torch.zeros(200, dtype=torch.long)
    with torch.no_grad():
        assert torch.equal(loaded(points, batch).logits, model(points, batch).logits)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_teacher(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_teacher(tmp_path / "missing.pt")


# --- the BEV branch ------------------------------------------------------------------------------------


def _bev_config(**changes: object) -> TeacherConfig:
    from kdmos_ros.pipeline.grid import GRIDS
    from kdmos_ros.train.models.teacher import MotionContext

    fields = {
        **TINY.model_dump(),
        "motion_context": MotionContext(grid=GRIDS["lite"], future=True).model_dump(),
        "bev_branch": "lite",
    }
    return TeacherConfig.model_validate({**fields, **changes})


def _bev_batch(config: TeacherConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor, BevInputs]:
    """Two samples of random points with random context, and their current points' BEV inputs."""
    import numpy as np

    from kdmos_ros.pipeline.features import point_inputs

    assert config.motion_context is not None
    grid = config.motion_context.grid
    generator = torch.Generator().manual_seed(seed)
    points = random_points(600, seed=seed, scans=2, extent=30.0)
    context = torch.rand(600, config.context_channels, generator=generator)
    points = torch.cat([points, context], dim=1)
    batch = (torch.arange(600) >= 300).long()
    features, cells, rows = [], [], []
    for sample in (0, 1):
        current = torch.nonzero((batch == sample) & (points[:, 4] == 0)).flatten()
        valid, f, c = point_inputs(grid, points[current, :4].numpy())
        features.append(torch.from_numpy(f))
        cells.append(torch.from_numpy(np.concatenate([np.full((len(c), 1), sample), c], axis=1)))
        rows.append(current[torch.from_numpy(valid)])
    motion = torch.rand(2, config.context_channels, grid.n_rho, grid.n_phi, generator=generator)
    bev = BevInputs(torch.cat(features), torch.cat(cells), motion, torch.cat(rows))
    return points, batch, bev


def test_bev_branch_config_is_checked() -> None:
    from kdmos_ros.pipeline.grid import PolarGrid
    from kdmos_ros.train.models.teacher import MotionContext

    config = _bev_config()
    assert config.context_channels == 2 * config.motion_context.motion.channels  # past and future
    assert config.in_features == 5 + config.context_channels
    with pytest.raises(ValidationError, match="unknown bev_branch"):
        _bev_config(bev_branch="huge")
    with pytest.raises(ValidationError, match="needs a motion_context"):
        _bev_config(motion_context=None)
    with pytest.raises(ValidationError, match="160 x 180 x 16"):
        _bev_config(motion_context=MotionContext(grid=PolarGrid(n_rho=64, n_phi=90, n_z=8)).model_dump())


def test_small_teacher_with_bev_branch_is_the_sum_of_its_branches() -> None:
    from kdmos_ros.pipeline.grid import GRIDS
    from kdmos_ros.train.models.student import PRESETS as PRESETS_STUDENT
    from kdmos_ros.train.models.student import StudentNet, build_student
    from kdmos_ros.train.models.teacher import MotionContext

    context = MotionContext(grid=GRIDS["lite"], future=True)
    with_bev = TeacherConfig.model_validate(
        {**preset_config("small").model_dump(), "motion_context": context.model_dump(), "bev_branch": "lite"}
    )
    without = TeacherConfig.model_validate({**with_bev.model_dump(), "bev_branch": None})
    # The branch is the lite student whose motion encoder takes past and future channels.
    branch = parameters(StudentNet(PRESETS_STUDENT["lite"], motion_channels=with_bev.context_channels))
    assert branch > parameters(build_student("lite"))
    assert parameters(TeacherNet(with_bev)) == parameters(TeacherNet(without)) + branch == 8_679_802


def test_bev_branch_starts_alone_and_the_point_branch_learns_a_residual() -> None:
    config = _bev_config()
    model = tiny_model(seed=16, config=config)
    points, batch, bev = _bev_batch(config, seed=16)
    with pytest.raises(ValueError, match="bev="):
        model(points, batch)
    assert model.bev is not None
    with torch.no_grad():
        logits = model(points, batch, bev=bev).logits
        bev_logits = model.bev.point_logits(bev.point_features, bev.point_cells, bev.motion_bev)
    # The point head starts at zero: the BEV branch's logits on its rows, zero on every other row.
    torch.testing.assert_close(logits[bev.rows], bev_logits)
    others = torch.ones(len(points), dtype=torch.bool)
    others[bev.rows] = False
    assert others.any() and not logits[others].any()

    # One training step gives the point branch a say: logits then differ on rows the BEV cannot see.
    model.train()
    labels = torch.where(points[:, 0] > 0, 3, 1)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss = segmentation_loss(
        model(points, batch, generator=torch.Generator().manual_seed(0), bev=bev).logits, labels
    )
    loss.backward()
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.bev.parameters() if p.requires_grad)
    optimiser.step()
    model.eval()
    with torch.no_grad():
        assert model(points, batch, bev=bev).logits[others].abs().sum() > 0


def test_bev_teacher_checkpoint_round_trip(tmp_path) -> None:
    config = _bev_config()
    model = tiny_model(seed=17, config=config)
    points, batch, bev = _bev_batch(config, seed=17)
    loaded, _ = load_teacher(save_teacher(tmp_path / "teacher.pt", model))
    assert loaded.config.bev_branch == "lite" and loaded.config.motion_context == config.motion_context
    with torch.no_grad():
        assert torch.equal(loaded(points, batch, bev=bev).logits, model(points, batch, bev=bev).logits)


def _trained_looking(student: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A student whose weights and BatchNorm statistics are all away from their initial values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in student.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.rand(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                tensor.mul_(0.5 + noise)
            else:
                tensor.add_(0.05 * (noise - 0.5))
    return student.eval()


def test_bev_branch_warm_started_from_a_student_predicts_what_the_student_does() -> None:
    from kdmos_ros.train.models.student import PRESETS as PRESETS_STUDENT
    from kdmos_ros.train.models.student import StudentNet
    from kdmos_ros.train.models.teacher import init_bev_branch

    config = _bev_config()
    student = _trained_looking(StudentNet(PRESETS_STUDENT["lite"]), seed=18)
    points, batch, bev = _bev_batch(config, seed=18)  # random future channels too: they must stay silent
    causal = student.config.motion_channels
    with torch.no_grad():
        expected = student.point_logits(bev.point_features, bev.point_cells, bev.motion_bev[:, :causal])
        cold = tiny_model(seed=18, config=config)
        assert not torch.allclose(cold(points, batch, bev=bev).logits[bev.rows], expected, atol=1e-3)
        init_bev_branch(cold, student)
        cold.eval()
        torch.testing.assert_close(cold(points, batch, bev=bev).logits[bev.rows], expected)
    # The future channels enter through zero weights (so training can give them a say), after a
    # BatchNorm that keeps its fresh statistics for them and the student's for the causal ones.
    assert cold.bev is not None
    norm, conv = cold.bev.motion[0][0], cold.bev.motion[0][1].first.conv
    assert conv.weight.shape[1] == 2 * causal and conv.weight[:, :causal].any()
    assert not conv.weight[:, causal:].any()
    torch.testing.assert_close(norm.running_mean[:causal], student.motion[0][0].running_mean)
    assert not norm.running_mean[causal:].any()


def test_bev_branch_refuses_a_student_it_cannot_hold() -> None:
    from kdmos_ros.pipeline.contract import MotionConfig
    from kdmos_ros.train.models.student import PRESETS as PRESETS_STUDENT
    from kdmos_ros.train.models.student import StudentNet
    from kdmos_ros.train.models.teacher import init_bev_branch

    lite = PRESETS_STUDENT["lite"]
    with pytest.raises(KdmosError, match="no BEV branch"):
        init_bev_branch(tiny_model(seed=19), StudentNet(lite))
    teacher = tiny_model(seed=19, config=_bev_config())
    with pytest.raises(KdmosError, match="grid"):
        init_bev_branch(teacher, StudentNet(PRESETS_STUDENT["full"]))
    with pytest.raises(KdmosError, match="does not fit"):
        init_bev_branch(teacher, StudentNet(lite.model_copy(update={"motion_widths": (16, 32, 64, 64)})))
    with pytest.raises(KdmosError, match="motion features"):
        init_bev_branch(teacher, StudentNet(lite.model_copy(update={"motion": MotionConfig(voxel_size=0.3)})))


def test_bev_branch_takes_a_non_causal_student_whole() -> None:
    from kdmos_ros.train.models.student import PRESETS as PRESETS_STUDENT
    from kdmos_ros.train.models.student import StudentNet
    from kdmos_ros.train.models.teacher import init_bev_branch

    config = _bev_config()
    noncausal = PRESETS_STUDENT["lite"].model_copy(update={"future": True})
    student = _trained_looking(StudentNet(noncausal), seed=20)
    points, batch, bev = _bev_batch(config, seed=20)
    teacher = tiny_model(seed=20, config=config)
    init_bev_branch(teacher, student)
    teacher.eval()
    with torch.no_grad():
        # The future channels are the student's own: it predicts from all of them, and so does the teacher.
        expected = student.point_logits(bev.point_features, bev.point_cells, bev.motion_bev)
        torch.testing.assert_close(teacher(points, batch, bev=bev).logits[bev.rows], expected)
    assert teacher.bev is not None
    for name, tensor in student.state_dict().items():
        assert torch.equal(teacher.bev.state_dict()[name], tensor), name
    from kdmos_ros.pipeline.grid import GRIDS
    from kdmos_ros.train.models.teacher import MotionContext

    causal = _bev_config(motion_context=MotionContext(grid=GRIDS["lite"]).model_dump())
    causal_teacher = tiny_model(seed=20, config=causal)
    with pytest.raises(KdmosError, match="non-causal"):
        init_bev_branch(causal_teacher, student)
