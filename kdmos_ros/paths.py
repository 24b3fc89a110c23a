"""Where the package's shared files (launch/, config/, models/) are on this machine.

The same tree is used three ways: from a source checkout (``pip install -e``), from a pip install
(setup.py's data_files land in ``<prefix>/share/kdmos_ros``) and from a colcon workspace (an ament
prefix on ``AMENT_PREFIX_PATH``). Looking the directory up here keeps the rest of the code free of
that distinction, and free of ROS imports.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = "kdmos_ros"


def share_candidates() -> list[Path]:
    """Places the share directory may be, in the order they are tried."""
    checkout = Path(__file__).resolve().parent.parent
    candidates = [checkout, Path(sys.prefix) / "share" / PACKAGE]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / PACKAGE)
    return candidates


def share_dir() -> Path | None:
    """The first candidate holding this package's ``package.xml``, or None when none does."""
    for candidate in share_candidates():
        if (candidate / "package.xml").is_file():
            return candidate
    return None


#: Models shipped in share/kdmos_ros/models, by the name `model_path` and `--model` also accept.
SHIPPED_MODELS = ("lite", "lite_int8", "nano")


def model_path(name_or_path: str | Path | None) -> Path:
    """An ONNX file from a path, a shipped model's name (:data:`SHIPPED_MODELS`), or None (lite)."""
    text = "lite" if name_or_path is None or str(name_or_path) == "" else str(name_or_path)
    if text in SHIPPED_MODELS:
        relative = Path("models") / f"kdmos_{text}.onnx"
        share = share_dir()
        return (share / relative) if share is not None else relative
    return Path(text).expanduser()
