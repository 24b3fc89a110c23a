"""The weight average against hand-computed values."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdmos_ros.train.ema import WeightAverage


def test_the_average_follows_the_ramped_decay() -> None:
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    average = WeightAverage(model, decay=0.5)
    # The ramp (1 + n) / (10 + n) stays below 0.5 until n = 8, so every update here uses it.
    expected = 0.0
    for step, value in enumerate((1.0, 2.0, 4.0, 4.0), start=1):
        with torch.no_grad():
            model.weight.fill_(value)
        decay = min(0.5, (1 + step) / (10 + step))
        assert average.current_decay() == pytest.approx(decay)
        average.update(model)
        expected = decay * expected + (1 - decay) * value
        assert average.model.weight.item() == pytest.approx(expected)
    assert average.updates == 4


def test_batch_norm_statistics_are_averaged_and_counters_copied() -> None:
    model = nn.BatchNorm1d(2)
    average = WeightAverage(model, decay=0.9)
    model.train()
    model(torch.tensor([[1.0, 2.0], [3.0, 6.0]]))  # running_mean moves from 0 to 0.1 * (2, 4)
    average.update(model)
    decay = 2 / 11
    torch.testing.assert_close(average.model.running_mean, (1 - decay) * torch.tensor([0.2, 0.4]))
    assert int(average.model.num_batches_tracked) == 1


def test_the_average_is_a_frozen_copy() -> None:
    model = nn.Linear(2, 2)
    average = WeightAverage(model, decay=0.99)
    assert all(not p.requires_grad for p in average.model.parameters())
    assert not average.model.training
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not torch.equal(average.model.weight, model.weight)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_a_decay_outside_the_open_unit_interval_is_refused(decay: float) -> None:
    with pytest.raises(ValueError, match="decay must be in"):
        WeightAverage(nn.Linear(1, 1), decay)
