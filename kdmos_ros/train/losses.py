"""Training losses: segmentation (Lovász-softmax + cross-entropy) and the two distillation losses.

Every function takes logits with classes along dimension 1 and integer labels in which
``ignore_index`` marks points (or voxels) that carry no supervision (KDMOS class 0, "ignore").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _lovasz_grad(sorted_truth: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss at errors sorted in decreasing order.

    Berman, Rannen Triki, Blaschko, "The Lovász-Softmax loss", CVPR 2018, Algorithm 1: with p
    ground-truth positives, J_k = 1 − (p − cumTP_k) / (p + cumFP_k) and the gradient is ΔJ_k.
    """
    positives = sorted_truth.sum()
    intersection = positives - sorted_truth.cumsum(0)
    union = positives + (1.0 - sorted_truth).cumsum(0)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


def lovasz_softmax(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 0) -> torch.Tensor:
    """Lovász-softmax loss (Berman et al., CVPR 2018), averaged over the classes present in ``labels``.

    ``logits`` is (P, C) or (B, C, ...) and ``labels`` the matching integer tensor.
    """
    if logits.dim() > 2:
        logits = logits.movedim(1, -1).reshape(-1, logits.shape[1])
        labels = labels.reshape(-1)
    keep = labels != ignore_index
    probabilities = logits[keep].softmax(dim=1)
    labels = labels[keep]
    losses = []
    for c in range(probabilities.shape[1]):
        truth = (labels == c).to(probabilities.dtype)
        if c == ignore_index or truth.sum() == 0:
            continue
        errors = (truth - probabilities[:, c]).abs()
        errors_sorted, order = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, _lovasz_grad(truth[order])))
    if not losses:
        return logits.sum() * 0.0  # keeps the graph (and DDP) happy on a batch with no labels
    return torch.stack(losses).mean()


def segmentation_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = 0,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """MotionBEV's loss: Lovász-softmax + (weighted) cross-entropy, labels ``ignore_index`` skipped."""
    if (labels != ignore_index).sum() == 0:
        return logits.sum() * 0.0
    cross_entropy = F.cross_entropy(logits, labels, weight=class_weights, ignore_index=ignore_index)
    return lovasz_softmax(logits, labels, ignore_index) + cross_entropy


def decoupled_kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    moving_class: int,
    class_weights: torch.Tensor,
    temperature: float = 4.0,
    ignore_index: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """KDMOS's decoupled logit distillation: (non-target term L_NC, target term L_TC).

    Cao et al., "KDMOS: Knowledge Distillation for Motion Segmentation", arXiv:2506.14130, 2025, and
    its reference code (SCNU-RISLAB/KDMOS, ``tckd_loss``), after Zhao et al.,
    "Decoupled Knowledge Distillation", CVPR 2022. Per labelled point with label y:
    - L_NC = Σ w_y · KL(softmax(t/T with y masked) ‖ softmax(s/T with y masked)) / Σ w_y: how the
      teacher ranks the wrong classes, weighted by the inverse frequency of the point's class;
    - L_TC = mean over moving points of KL([p_y, 1 − p_y]_t ‖ [p_y, 1 − p_y]_s), p = softmax(·/T):
      how sure the teacher is of the true class, where it matters most.
    A batch with no moving point has L_TC = 0 rather than 0/0.
    """
    keep = labels != ignore_index
    s, t, y = student[keep] / temperature, teacher[keep] / temperature, labels[keep]
    if y.numel() == 0:
        zero = student.sum() * 0.0
        return zero, zero
    target = F.one_hot(y, num_classes=s.shape[1]).bool()
    # Masking the target with −inf (a large negative, to stay finite) gives the non-target distribution.
    masked_s = s.masked_fill(target, -1e9)
    masked_t = t.masked_fill(target, -1e9)
    kl_non_target = (
        (masked_t.softmax(1) * (masked_t.log_softmax(1) - masked_s.log_softmax(1)))
        .masked_fill(target, 0.0)
        .sum(1)
    )
    weights = class_weights.to(s.dtype)[y]
    non_target = (weights * kl_non_target).sum() / weights.sum()

    moving = y == moving_class
    if not moving.any():
        return non_target, student.sum() * 0.0
    p_s = s[moving].softmax(1).gather(1, y[moving, None]).clamp(1e-7, 1 - 1e-7)
    p_t = t[moving].softmax(1).gather(1, y[moving, None]).clamp(1e-7, 1 - 1e-7)
    binary_s = torch.cat([p_s, 1 - p_s], dim=1)
    binary_t = torch.cat([p_t, 1 - p_t], dim=1)
    target_term = (binary_t * (binary_t.log() - binary_s.log())).sum(1).mean()
    return non_target, target_term


def kdmos_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    moving_class: int,
    class_weights: torch.Tensor,
    temperature: float = 4.0,
    weight: float = 0.3,
    non_target_weight: float = 3.0,
    ignore_index: int = 0,
) -> torch.Tensor:
    """The distillation part of KDMOS's total loss: ``weight · (non_target_weight · L_NC + L_TC)``."""
    non_target, target = decoupled_kd_loss(
        student, teacher, labels, moving_class, class_weights, temperature, ignore_index
    )
    return weight * (non_target_weight * non_target + target)


def relation_kd_loss(
    student_features: torch.Tensor,
    teacher_features: torch.Tensor,
    tau: float = 1.0,
) -> torch.Tensor:
    """SRKD's cross-sample relation distillation on (B, M, D) features of the same sampled points.

    SRKD (structure- and relation-aware knowledge distillation for point cloud segmentation,
    2025), as specified in the project design (DESIGN.md §4): features are L2-normalised, the affinity
    A_ij = F_i · F_jᵀ is formed for every pair (i, j) of samples in the batch (so relations
    between scans are distilled too), and each row of the student's affinity is pulled to the
    teacher's by KL(softmax(Aᵀ/τ) ‖ softmax(Aˢ/τ)). Student and teacher widths must already match
    (a projector maps the student's). Cost is O(B² M²): sample M points to bound it.
    """
    if student_features.shape != teacher_features.shape:
        raise ValueError(
            f"student features {tuple(student_features.shape)} and teacher features "
            f"{tuple(teacher_features.shape)} differ: project the student's to the teacher's width"
        )
    batch, points, width = student_features.shape
    fs = F.normalize(student_features, dim=-1).reshape(batch * points, width)
    ft = F.normalize(teacher_features, dim=-1).reshape(batch * points, width)
    # Rows: every point of every sample; columns: every point of every sample. Softmax runs per row
    # within each target sample j, i.e. over the M columns of the block A_ij.
    affinity_s = (fs @ fs.T / tau).reshape(batch * points, batch, points)
    affinity_t = (ft @ ft.T / tau).reshape(batch * points, batch, points)
    log_s = affinity_s.log_softmax(-1)
    log_t = affinity_t.log_softmax(-1)
    return (log_t.exp() * (log_t - log_s)).sum(-1).mean()


def logit_kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Classic KD (Hinton et al., 2015): mean over points of KL(softmax(t/T) ‖ softmax(s/T)) · T²."""
    log_s = (student / temperature).log_softmax(1)
    log_t = (teacher / temperature).log_softmax(1)
    return (log_t.exp() * (log_t - log_s)).sum(1).mean() * temperature**2
