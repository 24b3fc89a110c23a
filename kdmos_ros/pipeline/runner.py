"""ONNX Runtime session for a kdmos model: provider choice, contract checks, warm-up.

Loading refuses, with a message that names the problem, a missing file, a file that is not an
ONNX model, a model without a kdmos contract or of a feature version this runtime does not
compute, and a model whose tensors disagree with its own contract (e.g. a grid other than the
one its motion input was built for).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from kdmos_ros.errors import KdmosError
from kdmos_ros.pipeline.contract import (
    INPUT_MOTION_BEV,
    INPUT_POINT_CELLS,
    INPUT_POINT_FEATURES,
    ModelContract,
    ModelContractError,
)

# Preference order of `provider="auto"`: fastest first; CPU always exists.
PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}

_LOG = logging.getLogger(__name__)


class ModelLoadError(KdmosError):
    """The model file cannot be used: missing, corrupt, or asking for an unavailable provider."""


def _provider_chain(provider: str) -> list[str]:
    available = ort.get_available_providers()
    if provider == "auto":
        return [name for name in PROVIDERS.values() if name in available]
    if provider not in PROVIDERS:
        raise ModelLoadError(f"unknown provider {provider!r}; choose auto, {', '.join(PROVIDERS)}")
    wanted = PROVIDERS[provider]
    if wanted not in available:
        hint = " (install onnxruntime-gpu)" if provider != "cpu" else ""
        raise ModelLoadError(
            f"provider {provider!r} is not available in this onnxruntime{hint}; "
            f"available: {', '.join(available)}"
        )
    # CUDA backs TensorRT for the nodes TensorRT cannot take; CPU backs everything.
    chain = [wanted] + (["CUDAExecutionProvider"] if provider == "tensorrt" else []) + [PROVIDERS["cpu"]]
    return [name for name in dict.fromkeys(chain) if name in available]


def _tensorrt_options(contract: ModelContract, cache_dir: Path) -> dict[str, str]:
    # TensorRT builds one engine per shape profile: give it the range of point counts a scan has.
    grid = contract.grid
    bev = f"1x{contract.motion.channels}x{grid.n_rho}x{grid.n_phi}"

    def profile(points: int) -> str:
        return f"{INPUT_POINT_FEATURES}:{points}x9,{INPUT_POINT_CELLS}:{points}x3,{INPUT_MOTION_BEV}:{bev}"

    return {
        # Half precision: 2-3x TensorRT's float32 speed; the moving probability moves by ~1e-3.
        "trt_fp16_enable": "True",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache_dir),
        "trt_profile_min_shapes": profile(1),
        "trt_profile_opt_shapes": profile(130_000),
        "trt_profile_max_shapes": profile(400_000),
    }


def _tensorrt_cache() -> Path:
    # Engines take minutes to build; the model's own folder may be a read-only install.
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    path = root / "kdmos_ros" / "tensorrt"
    path.mkdir(parents=True, exist_ok=True)
    return path


# y = Relu(x) for x: float[1] (opset 13), serialised with onnx.helper: a session of it shows whether a
# provider really loads (CUDA, cuDNN, TensorRT libraries), which get_available_providers() does not.
_PROBE_MODEL = (
    b'\x08\x08\x12\x05kdmos:7\n\x0c\n\x01x\x12\x01y"\x04Relu\x12\x05probeZ\x0f\n\x01x\x12\n\n\x08\x08'
    b"\x01\x12\x04\n\x02\x08\x01b\x0f\n\x01y\x12\n\n\x08\x08\x01\x12\x04\n\x02\x08\x01B\x04\n\x00\x10\r"
)

#: The two distributions that install the ``onnxruntime`` module.
RUNTIME_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")


def provider_status() -> dict[str, str]:
    """Per provider of :data:`PROVIDERS`: ``usable``, or why not, from a real session of a tiny model."""
    available = ort.get_available_providers()
    status = {}
    for short, name in PROVIDERS.items():
        if name not in available:
            hint = " (install onnxruntime-gpu: README, GPU)" if short != "cpu" else ""
            status[short] = f"not in this onnxruntime build{hint}"
            continue
        options = ort.SessionOptions()
        options.log_severity_level = 4
        try:
            with warnings.catch_warnings():
                # onnxruntime warns as well as falling back; the status line says it once.
                warnings.simplefilter("ignore", UserWarning)
                session = ort.InferenceSession(_PROBE_MODEL, sess_options=options, providers=[name])
        except Exception as error:  # onnxruntime raises several private exception types
            text = str(error).strip()
            status[short] = f"fails to load: {text.splitlines()[0] if text else type(error).__name__}"
            continue
        # A provider whose libraries are missing is dropped silently, leaving the CPU.
        loaded = session.get_providers()[0] == name
        status[short] = "usable" if loaded else "fails to load (CUDA, cuDNN or TensorRT libraries missing?)"
    return status


def shadowing_warning(installed: dict[str, str | None]) -> str | None:
    """A warning when both ``onnxruntime`` and ``onnxruntime-gpu`` are in ``installed`` (name → version).

    Both install the ``onnxruntime`` module; whichever pip wrote last wins, so the GPU providers
    vanish when a later install pulls the CPU build back in.
    """
    if all(installed.get(name) for name in RUNTIME_DISTRIBUTIONS):
        return (
            "both onnxruntime and onnxruntime-gpu are installed and share one module; keep only the GPU "
            "build: pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu"
        )
    return None


class ModelRunner:
    """A loaded kdmos model: ``run(point_features, point_cells, motion_bev) -> logits``."""

    def __init__(
        self,
        path: str | Path,
        provider: str = "auto",
        threads: int | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(path)
        log = log or _LOG.info
        if not self.path.is_file():
            raise ModelLoadError(f"model file not found: {self.path}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3  # onnxruntime's own warnings would bury ours
        try:
            # Read the contract before building a GPU session: a wrong model fails fast and clearly.
            metadata_session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=[PROVIDERS["cpu"]]
            )
        except Exception as error:  # onnxruntime raises several private exception types
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelLoadError(f"{self.path} is not a loadable ONNX model: {first_line}") from None
        custom = metadata_session.get_modelmeta().custom_metadata_map
        self.contract = ModelContract.from_metadata(custom, source=str(self.path))
        self._check_signature(metadata_session)

        chain = _provider_chain(provider)
        if chain == [PROVIDERS["cpu"]]:
            self.session = metadata_session
        else:
            provider_options = [
                _tensorrt_options(self.contract, _tensorrt_cache()) if name == PROVIDERS["tensorrt"] else {}
                for name in chain
            ]
            self.session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=chain, provider_options=provider_options
            )
        self.provider = self.session.get_providers()[0]
        grid = self.contract.grid
        log(
            f"kdmos model {self.path.name}: preset {self.contract.preset}, grid "
            f"{grid.n_rho}x{grid.n_phi}x{grid.n_z}, {self.contract.motion.channels} motion channels, "
            f"provider {self.provider}"
        )

    def _check_signature(self, session: ort.InferenceSession) -> None:
        """The graph's inputs and outputs must be the ones its contract describes."""
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = [o.name for o in session.get_outputs()]
        source = str(self.path)
        if set(inputs) != set(self.contract.inputs) or outputs != list(self.contract.outputs):
            raise ModelContractError(
                f"{source}: graph inputs {sorted(inputs)} / outputs {outputs} do not match its contract "
                f"({list(self.contract.inputs)} / {list(self.contract.outputs)})"
            )
        grid = self.contract.grid
        expected = [1, self.contract.motion.channels, grid.n_rho, grid.n_phi]
        actual = inputs[INPUT_MOTION_BEV].shape
        mismatch = len(actual) != 4 or any(
            isinstance(a, int) and a != e for a, e in zip(actual, expected, strict=False)
        )
        if mismatch:
            raise ModelContractError(
                f"{source}: motion_bev input has shape {actual} but the contract's grid and motion "
                f"settings give {expected} (grid {grid.n_rho}x{grid.n_phi}, "
                f"{self.contract.motion.channels} channels): its metadata does not belong to these weights"
            )
        feature_shape = inputs[INPUT_POINT_FEATURES].shape
        if len(feature_shape) != 2 or feature_shape[1] != len(self.contract.point_features):
            raise ModelContractError(
                f"{source}: point_features input has shape {feature_shape}, expected "
                f"[N, {len(self.contract.point_features)}]"
            )

    def run(self, point_features: np.ndarray, point_cells: np.ndarray, motion_bev: np.ndarray) -> np.ndarray:
        """Per-point logits (M, n_classes) for M valid points."""
        feeds = {
            INPUT_POINT_FEATURES: np.ascontiguousarray(point_features, dtype=np.float32),
            INPUT_POINT_CELLS: np.ascontiguousarray(point_cells, dtype=np.int64),
            INPUT_MOTION_BEV: np.ascontiguousarray(motion_bev, dtype=np.float32),
        }
        return self.session.run(None, feeds)[0]

    def warmup(self, points: int = 120_000, runs: int = 2) -> None:
        """Run a synthetic scan through the model so the first real scan is not the slow one."""
        grid = self.contract.grid
        rng = np.random.default_rng(0)
        features = rng.normal(size=(points, len(self.contract.point_features))).astype(np.float32)
        cells = np.stack(
            [rng.integers(0, n, size=points) for n in (grid.n_rho, grid.n_phi, grid.n_z)], axis=1
        ).astype(np.int64)
        bev = np.zeros((1, self.contract.motion.channels, grid.n_rho, grid.n_phi), dtype=np.float32)
        for _ in range(runs):
            self.run(features, cells, bev)
