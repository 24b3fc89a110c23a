"""Exponential moving average of a model's weights (``optim.ema_decay``).

On a short budget the weights still move a lot from step to step, so the model the last step leaves
is one noisy sample of the trajectory: validation swings by several IoU points between epochs and
between seeds. The average of the recent weights (Polyak and Juditsky, SIAM J. Control Optim. 1992)
is a steadier model; the trainer validates, keeps and exports the average and trains the raw weights.

The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (TensorFlow's
``ExponentialMovingAverage`` with ``num_updates``), so the first steps, whose random weights the
average would otherwise carry for hundreds of steps, fade quickly. Floating-point buffers (batch-norm
statistics) are averaged like the weights; integer buffers (batch counters) are copied.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """An averaged copy of ``model``; call :meth:`update` after every optimiser step."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the weight-average decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next update uses."""
        n = self.updates + 1
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights and buffers."""
        decay = self.current_decay()
        self.updates += 1
        current = model.state_dict()  # the average is a deep copy of this model: same names
        for name, value in self.model.state_dict().items():
            if value.dtype.is_floating_point:
                value.lerp_(current[name].detach(), 1.0 - decay)
            else:
                value.copy_(current[name])
