"""Checkpoint files of the networks: one format, one loader, clear errors.

A checkpoint is a ``torch.save``d dict ``{"kind": ..., "config": <pydantic config as JSON data>,
"state_dict": ..., **extra}``. It loads with ``weights_only=True``, so extra keys must be plain
containers, numbers, strings or tensors. The config travels with the weights, so a checkpoint
rebuilds its own network.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from pydantic import BaseModel, ValidationError
from torch import nn

from kdmos_ros.errors import KdmosError, describe_validation_error

ConfigT = TypeVar("ConfigT", bound=BaseModel)
_RESERVED = {"kind", "config", "state_dict"}


class CheckpointError(KdmosError):
    """A checkpoint is missing, unreadable, of another kind, or does not match its own configuration."""


def save_checkpoint(path: str | Path, kind: str, model: nn.Module, config: BaseModel, **extra: Any) -> Path:
    """Write ``model``'s weights (on the CPU) with its config and ``extra`` keys."""
    reserved = _RESERVED & extra.keys()
    if reserved:
        raise ValueError(f"extra checkpoint keys may not be {sorted(reserved)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"kind": kind, "config": config.model_dump(mode="json"), "state_dict": state, **extra}, path)
    return path


def checkpoint_kind(path: str | Path, kinds: tuple[str, ...]) -> str:
    """The ``kind`` of the checkpoint at ``path``, which must be one of ``kinds`` (clear errors)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a file that is not a checkpoint
        raise CheckpointError(f"{path} is not a readable torch checkpoint ({type(error).__name__})") from None
    kind = payload.get("kind") if isinstance(payload, dict) else None
    if kind not in kinds:
        names = " or ".join(k.removeprefix("kdmos-") for k in kinds)
        raise CheckpointError(f"{path} is not a kdmos {names} checkpoint (kind {kind!r})")
    return str(kind)


def load_checkpoint(
    path: str | Path,
    kind: str,
    config_type: type[ConfigT],
    build: Callable[[ConfigT], nn.Module],
    map_location: str | torch.device = "cpu",
) -> tuple[nn.Module, ConfigT, dict[str, Any]]:
    """(model in eval mode on ``map_location``, its config, the extra keys) of a ``kind`` checkpoint."""
    path = Path(path)
    what = kind.removeprefix("kdmos-")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for a damaged or foreign file
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path} is not a readable torch checkpoint ({reason[:200]})") from None
    if not isinstance(payload, dict) or payload.get("kind") != kind:
        found = payload.get("kind") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path} is not a kdmos {what} checkpoint (kind {found!r}, expected {kind!r})")
    try:
        config = config_type.model_validate(payload.get("config"))
    except ValidationError as error:
        raise CheckpointError(f"{path}: invalid {what} config ({describe_validation_error(error)})") from None
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} has no state_dict")
    model = build(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = " ".join(line.strip() for line in str(error).strip().splitlines()[:2])
        raise CheckpointError(f"{path}: weights do not match its config ({first[:300]})") from None
    extra = {k: v for k, v in payload.items() if k not in _RESERVED}
    return model.to(map_location).eval(), config, extra
