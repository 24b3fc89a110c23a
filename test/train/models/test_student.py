"""The student network: sizes, output shapes, pooling, φ wrap-around, DySample, checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from kdmos_ros.pipeline.contract import KDMOS_CLASSES, MotionConfig
from kdmos_ros.pipeline.grid import GRIDS, PolarGrid
from kdmos_ros.train.checkpoint import CheckpointError
from kdmos_ros.train.models.student import (
    PRESETS,
    DoubleConv,
    DySample,
    PillarPointNet,
    StudentConfig,
    StudentNet,
    build_student,
    count_parameters,
    format_parameter_counts,
    load_student,
    pool_pillars_dense,
    pool_pillars_sparse,
    save_student,
)

# Odd sizes on purpose: 36 × 38 pools to 18 × 19, 9 × 9, 4 × 4, 2 × 2, so the decoder must pad.
SMALL = StudentConfig(
    grid=PolarGrid(n_rho=36, n_phi=38, n_z=4),
    point_widths=(8, 16),
    bev_channels=8,
    appearance_widths=(8, 8, 16, 16, 16),
    motion_widths=(4, 8, 8, 8),
    gate_width=8,
)


def random_batch(
    config: StudentConfig, points_per_sample: list[int], seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(features [N, 9], cells [N, 4] = (b, ρ, φ, z), motion [B, C_m, H, W]) with random valid cells."""
    generator = torch.Generator().manual_seed(seed)
    grid = config.grid
    cells = []
    for b, n in enumerate(points_per_sample):
        columns = [torch.full((n,), b)]
        columns += [torch.randint(0, size, (n,), generator=generator) for size in grid.shape]
        cells.append(torch.stack(columns, dim=1))
    features = torch.randn(sum(points_per_sample), 9, generator=generator)
    motion = torch.rand(
        len(points_per_sample), config.motion_channels, grid.n_rho, grid.n_phi, generator=generator
    )
    return features, torch.cat(cells), motion


def small_model(config: StudentConfig = SMALL, seed: int = 0) -> StudentNet:
    """An eval-mode model whose BatchNorms hold statistics of real activations (not the identity)."""
    torch.manual_seed(seed)
    model = StudentNet(config)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for s in range(2):
            model(*random_batch(config, [300, 200], seed=100 + s))
    return model.eval()


def test_full_preset_has_the_kdmos_parameter_count() -> None:
    # KDMOS reports 4.03 M parameters for its student (MotionBEV's 4.36 M minus the transposed convs).
    total = count_parameters(build_student("full"))["total"]
    assert abs(total - 4.03e6) / 4.03e6 < 0.05, total


def test_lite_preset_is_much_smaller_and_on_the_lite_grid() -> None:
    lite, full = count_parameters(build_student("lite")), count_parameters(build_student("full"))
    assert lite["total"] < 0.3 * full["total"]
    for name, config in PRESETS.items():
        # nano shares lite's grid: with 3° columns it missed half the people (docs/results.md)
        assert config.preset == name and config.grid == GRIDS["lite" if name == "nano" else name]
    assert format_parameter_counts(lite).startswith("total 1.00 M (pointnet ")


def test_nano_preset_is_a_quarter_of_lite_and_takes_voxel_inputs() -> None:
    nano, lite = count_parameters(build_student("nano")), count_parameters(build_student("lite"))
    assert nano["total"] < 0.3 * lite["total"]
    contract = PRESETS["nano"].to_contract()
    assert contract.input_options.points == "voxel" and contract.preset == "nano"
    assert PRESETS["lite"].to_contract().input_options.points == "all"


def test_training_forward_shapes_for_a_batch_of_two() -> None:
    model = StudentNet(SMALL).train()
    features, cells, motion = random_batch(SMALL, [700, 500])
    out = model(features, cells, motion)
    grid = SMALL.grid
    assert out.point_logits.shape == (1200, 4)
    assert out.voxel_logits.shape == (2, 4, grid.n_z, grid.n_rho, grid.n_phi)
    assert out.point_embeddings.shape == (1200, model.embedding_dim)
    loss = out.point_logits.sum() + out.voxel_logits.mean() + out.point_embeddings.sum()
    loss.backward()
    assert model.pointnet.mlp[0].weight.grad is not None
    assert model.up[-1].upsample.offset.weight.grad is not None


def test_point_logits_are_their_voxels_logits() -> None:
    model = small_model()
    features, cells, motion = random_batch(SMALL, [400, 300], seed=3)
    with torch.no_grad():
        out = model(features, cells, motion)
    b, rho, phi, z = cells.unbind(1)
    gathered = out.voxel_logits[b, :, z, rho, phi]
    assert torch.equal(out.point_logits, gathered)
    # The inference path gives the same logits, and (ρ, φ, z) cells mean batch element 0.
    with torch.no_grad():
        assert torch.equal(model.point_logits(features, cells, motion), out.point_logits)
        first = cells[:, 0] == 0
        single = model.point_logits(features[first], cells[first, 1:], motion[:1])
    torch.testing.assert_close(single, out.point_logits[first], rtol=0, atol=1e-4)


def test_point_embeddings_belong_to_the_pillar() -> None:
    model = small_model()
    features, cells, motion = random_batch(SMALL, [300], seed=4)
    # Two more points in the pillar of point 0, in other height bins.
    extra = cells[:1].repeat(2, 1)
    extra[:, 3] = torch.tensor([(cells[0, 3] + 1) % 4, (cells[0, 3] + 2) % 4])
    cells = torch.cat([cells, extra])
    features = torch.cat([features, torch.randn(2, 9)])
    with torch.no_grad():
        out = model(features, cells, motion)
    assert torch.equal(out.point_embeddings[-1], out.point_embeddings[0])
    assert torch.equal(out.point_embeddings[-2], out.point_embeddings[0])
    assert not torch.equal(out.point_logits[-1], out.point_logits[0])


def test_batch_elements_do_not_see_each_other() -> None:
    model = small_model()
    features, cells, motion = random_batch(SMALL, [400, 300], seed=5)
    with torch.no_grad():
        both = model(features, cells, motion)
        first = cells[:, 0] == 0
        alone = model(features[first], cells[first], motion[:1])
    torch.testing.assert_close(alone.point_logits, both.point_logits[first], rtol=0, atol=1e-4)


def brute_force_pillar_max(features: torch.Tensor, pillar: torch.Tensor, num_pillars: int) -> torch.Tensor:
    out = torch.zeros(num_pillars, features.shape[1])
    for i in range(len(pillar)):
        out[pillar[i]] = torch.maximum(out[pillar[i]], features[i])
    return out


def test_pillar_max_pooling_equals_a_brute_force_max() -> None:
    generator = torch.Generator().manual_seed(7)
    features = torch.rand(500, 6, generator=generator)
    pillar = torch.randint(0, 40, (500,), generator=generator)  # ~12 points per pillar, some empty
    pillar[pillar == 13] = 14  # pillar 13 certainly empty
    expected = brute_force_pillar_max(features, pillar, 60)
    occupied, pooled = pool_pillars_sparse(features, pillar)
    assert torch.equal(occupied, torch.unique(pillar))
    assert torch.equal(pooled, expected[occupied])
    occupancy, dense = pool_pillars_dense(features, pillar, 60)
    assert torch.equal(dense.t(), expected)
    assert torch.equal(occupancy.bool(), torch.isin(torch.arange(60), pillar))


def test_sparse_and_dense_pooling_give_the_same_image_with_empty_pillars_zero() -> None:
    grid = PolarGrid(n_rho=10, n_phi=12, n_z=2)
    torch.manual_seed(0)
    pointnet = PillarPointNet(9, (8, 16), 5, grid).eval()
    features = torch.randn(200, 9)
    pillar = torch.randint(0, 60, (200,))  # the first half of the 120 pillars only
    with torch.no_grad():
        sparse = pointnet(features, pillar, 1)
        pointnet.dense = True
        dense = pointnet(features, pillar, 1)
    assert sparse.shape == (1, 5, 10, 12)
    torch.testing.assert_close(dense, sparse, rtol=0, atol=1e-6)
    assert torch.all(sparse.flatten(2)[..., 60:] == 0)
    assert torch.any(sparse.flatten(2)[..., :60] != 0)


def test_double_conv_wraps_around_phi() -> None:
    torch.manual_seed(0)
    block = DoubleConv(3, 4).eval()
    x = torch.randn(1, 3, 6, 10)
    with torch.no_grad():
        y = block(x)
        for shift in (1, 4):
            torch.testing.assert_close(block(x.roll(shift, -1)), y.roll(shift, -1), rtol=0, atol=1e-6)
        # What this guards against: zero padding along φ would change the border columns.
        first, second = block.first, block.second
        zero_padded = second(first(F.pad(x, (2, 2))))
    assert not torch.allclose(zero_padded[..., 0], y[..., 0], atol=1e-3)
    torch.testing.assert_close(zero_padded[..., 2:-2], y[..., 2:-2], rtol=0, atol=1e-6)


def test_network_output_turns_with_the_scene() -> None:
    # With φ divisible by 2⁴, turning the scene by 16 azimuth columns must turn the output exactly:
    # only true if every conv, gate and upsampling wraps around φ = ±π.
    config = StudentConfig.model_validate(
        {**SMALL.model_dump(), "grid": PolarGrid(n_rho=32, n_phi=32, n_z=4)}
    )
    model = small_model(config)
    features, cells, motion = random_batch(config, [600], seed=6)
    turned = cells.clone()
    turned[:, 2] = (cells[:, 2] + 16) % 32
    with torch.no_grad():
        logits = model.point_logits(features, cells, motion)
        logits_turned = model.point_logits(features, turned, motion.roll(16, -1))
    torch.testing.assert_close(logits_turned, logits, rtol=0, atol=2e-5)


def test_dysample_without_offsets_is_bilinear_upsampling_that_wraps_phi() -> None:
    sampler = DySample(8, groups=4)
    torch.nn.init.zeros_(sampler.offset.weight)
    x = torch.randn(2, 8, 5, 7)
    with torch.no_grad():
        up = sampler(x, (5, 7))
    wrapped = torch.cat([x[..., -1:], x, x[..., :1]], dim=-1)
    expected = F.interpolate(wrapped, scale_factor=2, mode="bilinear", align_corners=False)[..., 2:-2]
    assert up.shape == (2, 8, 10, 14)
    torch.testing.assert_close(up, expected, rtol=0, atol=1e-5)
    # Column 0 mixes in the last φ column (wrap), not a copy of column 0 (clamp).
    clamped = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert not torch.allclose(up[..., 0], clamped[..., 0], atol=1e-3)


def test_dysample_gather_sampling_equals_grid_sample_with_large_offsets() -> None:
    # Offsets of several pixels push samples past the ρ borders (clamped) and across the φ seam.
    sampler = DySample(8, groups=2)
    torch.nn.init.normal_(sampler.offset.weight, std=2.0)
    torch.nn.init.normal_(sampler.offset.bias, std=8.0)
    x = torch.randn(2, 8, 5, 7)
    with torch.no_grad():
        by_grid = sampler(x, (5, 7))
        sampler.gather = True
        by_gather = sampler(x, (5, 7))
    assert by_gather.shape == (2, 8, 10, 14)
    torch.testing.assert_close(by_gather, by_grid, rtol=0, atol=1e-5)


def test_dysample_offsets_move_each_groups_samples() -> None:
    sampler = DySample(8, groups=4)
    torch.nn.init.zeros_(sampler.offset.weight)
    x = torch.randn(1, 8, 6, 9)
    with torch.no_grad():
        still = sampler(x, (6, 9))
        # Offset channels are (x/y, group, sub-row, sub-column): move group 1 by +1 input pixel in x
        # (offsets are scaled by 0.25), which is +2 output columns.
        bias = torch.zeros(2, 4, 2, 2)
        bias[0, 1] = 4.0
        sampler.offset.bias.copy_(bias.flatten())
        moved = sampler(x, (6, 9))
    group1 = slice(2, 4)
    torch.testing.assert_close(moved[:, group1, :, :-2], still[:, group1, :, 2:], rtol=0, atol=1e-5)
    others = [0, 1, 4, 5, 6, 7]
    assert torch.equal(moved[:, others], still[:, others])


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    model = small_model()
    path = save_student(tmp_path / "ckpt" / "student.pt", model, SMALL, epoch=3, training={"data": "sim"})
    loaded, config, extra = load_student(path)
    assert config == SMALL
    assert extra == {"epoch": 3, "training": {"data": "sim"}}
    assert not loaded.training
    features, cells, motion = random_batch(SMALL, [300, 200], seed=8)
    with torch.no_grad():
        assert torch.equal(
            loaded(features, cells, motion).point_logits, model(features, cells, motion).point_logits
        )


def test_bad_checkpoints_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_student(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pt is not a readable torch checkpoint"):
        load_student(garbage)
    other = tmp_path / "other.pt"
    torch.save({"kind": "something-else", "state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="not a kdmos student checkpoint"):
        load_student(other)
    # The config says lite, the weights are the small model's.
    mixed = tmp_path / "mixed.pt"
    save_student(mixed, StudentNet(SMALL), SMALL)
    payload = torch.load(mixed, weights_only=True)
    payload["config"] = PRESETS["lite"].model_dump(mode="json")
    torch.save(payload, mixed)
    with pytest.raises(CheckpointError, match="weights do not match its config"):
        load_student(mixed)
    broken = tmp_path / "broken.pt"
    payload["config"]["motion_widths"] = [1]
    torch.save(payload, broken)
    with pytest.raises(CheckpointError, match="invalid student config"):
        load_student(broken)


def test_contract_matches_the_config() -> None:
    config = PRESETS["lite"]
    contract = config.to_contract({"trained": False})
    assert contract.grid == config.grid
    assert contract.motion == MotionConfig() and contract.motion.channels == config.motion_channels == 8
    assert contract.classes == KDMOS_CLASSES
    assert contract.moving_class == 3 and contract.ignore_class == 0
    assert contract.preset == "lite" and contract.training == {"trained": False}


def test_inconsistent_configs_are_refused() -> None:
    with pytest.raises(ValidationError, match="one level fewer"):
        StudentConfig(motion_widths=(16, 32))
    with pytest.raises(ValidationError, match="divisible by upsample_groups"):
        StudentConfig(appearance_widths=(30, 64, 128, 256, 256))
    with pytest.raises(ValidationError, match="at least 32 cells"):
        StudentConfig(grid=PolarGrid(n_rho=12, n_phi=360, n_z=32))


def test_motion_gate_keeps_cells_without_motion_evidence_static() -> None:
    gated_config = SMALL.model_copy(update={"motion_gate": 5})
    torch.manual_seed(0)
    gated = StudentNet(gated_config).eval()
    plain = StudentNet(SMALL).eval()
    plain.load_state_dict(gated.state_dict())  # the same weights, without the gate
    features, cells, motion = random_batch(SMALL, [300, 200])
    moving = KDMOS_CLASSES.index("moving")
    with torch.no_grad():
        # No past scan: the motion BEV is all zero, and no point can be moving.
        silent = gated(features, cells, torch.zeros_like(motion))
        assert silent.gate is not None and not silent.gate.any()
        assert torch.softmax(silent.point_logits[:, 1:], dim=1)[:, moving - 1].max() < 1e-12
        # Evidence in one cell of sample 0 (φ column 0, so the neighbourhood wraps to column 37).
        sparse = torch.zeros_like(motion)
        sparse[0, 3, 10, 0] = 0.8
        out = gated(features, cells, sparse)
        reference = plain(features, cells, sparse)
    open_cells = out.gate.nonzero().tolist()
    expected = [[0, r, p] for r in range(8, 13) for p in (*range(36, 38), *range(0, 3))]
    assert sorted(open_cells) == sorted(expected)
    inside = out.gate[cells[:, 0], cells[:, 1], cells[:, 2]] > 0
    assert inside.any() and not inside.all()
    # Inside the gate the logits are the ungated network's; outside only the moving one is lowered.
    torch.testing.assert_close(out.point_logits[inside], reference.point_logits[inside])
    lowered = reference.point_logits[~inside].clone()
    lowered[:, moving] -= 30.0
    torch.testing.assert_close(out.point_logits[~inside], lowered)
    # The inference path the export traces gates the same way.
    with torch.no_grad():
        single = gated.point_logits(features[:300], cells[:300, 1:], sparse[:1])
    torch.testing.assert_close(single, out.point_logits[:300])


def test_motion_gate_must_be_odd() -> None:
    with pytest.raises(ValidationError, match="motion_gate must be odd"):
        StudentConfig.model_validate({**SMALL.model_dump(), "motion_gate": 4})
