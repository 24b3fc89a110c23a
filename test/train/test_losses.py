"""Losses against values computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kdmos_ros.train.losses import (
    decoupled_kd_loss,
    kdmos_loss,
    logit_kd_loss,
    lovasz_softmax,
    relation_kd_loss,
    segmentation_loss,
)


def _logits(probabilities: list[list[float]]) -> torch.Tensor:
    """Logits whose softmax is exactly ``probabilities`` (class 0, the ignore class, gets ~0)."""
    p = torch.tensor(probabilities, dtype=torch.float64)
    return torch.cat([torch.full((len(p), 1), -1e4, dtype=torch.float64), p.log()], dim=1)


# Three labelled points and one ignored: p(class 1) = .8 .3 .4, p(class 2) = .2 .7 .6.
LOGITS = _logits([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.5, 0.5]])
LABELS = torch.tensor([1, 2, 1, 0])


def test_lovasz_softmax_by_hand() -> None:
    # Class 1: errors |1-.8|, |0-.3|, |1-.4| = .2 .3 .6, sorted .6(fg) .3(bg) .2(fg); p = 2 positives:
    #   J = 1 - (2-[1,1,2]) / (2+[0,1,1]) = [.5, 2/3, 1] -> grad [.5, 1/6, 1/3] -> .3 + .05 + .0667.
    # Class 2: errors .2 .3 .6, sorted .6(bg) .3(fg) .2(bg); p = 1:
    #   J = 1 - (1-[0,1,1]) / (1+[1,1,2]) = [.5, 1, 1] -> grad [.5, .5, 0] -> .3 + .15 = .45.
    expected = (0.3 + 0.05 + 0.2 / 3 + 0.45) / 2
    assert lovasz_softmax(LOGITS, LABELS).item() == pytest.approx(expected, abs=1e-9)


def test_segmentation_loss_is_lovasz_plus_cross_entropy() -> None:
    cross_entropy = -(math.log(0.8) + math.log(0.7) + math.log(0.4)) / 3
    expected = (0.3 + 0.05 + 0.2 / 3 + 0.45) / 2 + cross_entropy
    assert segmentation_loss(LOGITS, LABELS).item() == pytest.approx(expected, abs=1e-9)


def test_segmentation_loss_on_voxel_grids_and_empty_batches() -> None:
    # (B, C, Z, H, W) logits work like a flat list of voxels.
    voxels = LOGITS[:3].T.reshape(1, 3, 1, 1, 3)
    labels = LABELS[:3].reshape(1, 1, 1, 3)
    assert segmentation_loss(voxels, labels).item() == pytest.approx(segmentation_loss(LOGITS, LABELS).item())
    nothing = segmentation_loss(LOGITS.requires_grad_(), torch.zeros(4, dtype=torch.long))
    assert nothing.item() == 0.0
    nothing.backward()


def test_decoupled_kd_by_hand() -> None:
    # One moving point, classes (ignore, static, moving), T = 4, logits given as 4 * (logits / T).
    # Teacher logits/T = [0, 0, ln 3] -> p = [.2, .2, .6]; student [0, 0, 0] -> p = 1/3 each.
    # L_TC = .6 ln(.6 / (1/3)) + .4 ln(.4 / (2/3)); with the moving class masked both sides give
    # [.5, .5] over (ignore, static), so L_NC = 0.
    teacher = torch.tensor([[0.0, 0.0, 4 * math.log(3.0)]])
    student = torch.zeros(1, 3)
    labels = torch.tensor([2])
    weights = torch.ones(3)
    non_target, target = decoupled_kd_loss(
        student, teacher, labels, 2, weights, temperature=4.0, ignore_index=-1
    )
    assert non_target.item() == pytest.approx(0.0, abs=1e-7)
    assert target.item() == pytest.approx(0.6 * math.log(1.8) + 0.4 * math.log(0.6), abs=1e-6)


def _reference_non_target(s: np.ndarray, t: np.ndarray, y: np.ndarray, w: np.ndarray, temp: float) -> float:
    """L_NC written point by point, straight from the formula."""
    total, norm = 0.0, 0.0
    for si, ti, yi in zip(s, t, y, strict=True):
        others = [c for c in range(len(si)) if c != yi]
        ps = np.exp(si[others] / temp) / np.exp(si[others] / temp).sum()
        pt = np.exp(ti[others] / temp) / np.exp(ti[others] / temp).sum()
        total += w[yi] * float((pt * np.log(pt / ps)).sum())
        norm += w[yi]
    return total / norm


def test_decoupled_kd_matches_the_formula_and_skips_ignored_points() -> None:
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(50, 4)) * 3, rng.normal(size=(50, 4)) * 3
    y = rng.integers(0, 4, size=50)
    w = np.array([0.0, 0.5, 2.0, 8.0])
    keep = y != 0
    non_target, target = decoupled_kd_loss(
        torch.tensor(s), torch.tensor(t), torch.tensor(y), moving_class=3, class_weights=torch.tensor(w)
    )
    assert non_target.item() == pytest.approx(
        _reference_non_target(s[keep], t[keep], y[keep], w, 4.0), rel=1e-6
    )
    assert target.item() > 0
    total = kdmos_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), 3, torch.tensor(w))
    assert total.item() == pytest.approx(0.3 * (3 * non_target.item() + target.item()), rel=1e-9)


def test_batch_without_moving_points_is_finite_with_finite_gradients() -> None:
    student = torch.randn(6, 4, requires_grad=True)
    labels = torch.tensor([1, 1, 2, 2, 1, 0])
    non_target, target = decoupled_kd_loss(student, torch.randn(6, 4), labels, 3, torch.ones(4))
    assert target.item() == 0.0 and math.isfinite(non_target.item())
    (non_target + target).backward()
    assert torch.isfinite(student.grad).all()


def test_relation_kd_by_hand() -> None:
    # One sample, two points. Student features orthogonal: affinity I, rows softmax [e, 1] / (e + 1).
    # Teacher features identical: affinity all ones, rows [.5, .5].
    # KL(t || s) per row = .5 ln(.5 (e+1) / e) + .5 ln(.5 (e+1)) = ln((e+1)/2) - .5.
    student = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    teacher = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    expected = math.log((math.e + 1) / 2) - 0.5
    assert relation_kd_loss(student, teacher, tau=1.0).item() == pytest.approx(expected, abs=1e-6)
    assert relation_kd_loss(teacher * 3.0, teacher).item() == pytest.approx(0.0, abs=1e-7)  # scale-free


def test_relation_kd_compares_across_samples() -> None:
    # Within each sample the student's relations equal the teacher's; only the cross-sample block
    # (A_01 = I for the teacher, -I for the student) differs, and the loss must see it.
    e = torch.eye(2)
    teacher = torch.stack([e, e])
    student = torch.stack([e, -e])
    assert relation_kd_loss(student, teacher).item() > 0.1
    with pytest.raises(ValueError, match="project the student"):
        relation_kd_loss(torch.zeros(2, 3, 8), torch.zeros(2, 3, 16))


def test_logit_kd() -> None:
    logits = torch.randn(5, 4)
    assert logit_kd_loss(logits, logits).item() == pytest.approx(0.0, abs=1e-6)
    # Uniform student, one-hot-ish teacher at T = 1: KL = ln C - H(teacher) > 0.
    teacher = torch.tensor([[10.0, 0.0, 0.0, 0.0]])
    assert logit_kd_loss(torch.zeros(1, 4), teacher, temperature=1.0).item() == pytest.approx(
        math.log(4) - 0.0, abs=2e-3
    )
