"""Spinning-LiDAR sensor presets: beams, resolution, range, noise and intensity, read from YAML.

A preset is data, not code: ``config/sensors/<name>.yaml`` (installed to ``share/kdmos_ros/config``)
describes one sensor, :class:`SensorPreset` validates it, and the simulator derives the ray grid
(one ray per beam and azimuth column) from it. A user adds a sensor by writing a YAML file and
passing its path wherever a preset name is accepted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kdmos_ros.errors import KdmosError
from kdmos_ros.paths import share_dir
from kdmos_ros.sim.classes import SURFACE_INDEX

__all__ = [
    "BeamBlock",
    "DriverDefaults",
    "IntensityModel",
    "SensorError",
    "SensorPreset",
    "load_sensor",
    "preset_dir",
    "preset_names",
]


class SensorError(KdmosError):
    """A sensor preset name is unknown or its YAML is not a valid preset."""


class BeamBlock(BaseModel):
    """``count`` beams spaced evenly from ``top_deg`` down to ``bottom_deg`` (both included)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(gt=0)
    top_deg: float = Field(ge=-90.0, le=90.0)
    bottom_deg: float = Field(ge=-90.0, le=90.0)


class IntensityModel(BaseModel):
    """Intensity (0..1) of a surface type: mean reflectivity and its spread between objects.

    Each object (a building, a car) draws its own reflectivity from N(mean, sd) once; points add the
    preset's ``intensity_noise`` on top.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: float = Field(ge=0.0, le=1.0)
    sd: float = Field(ge=0.0, le=1.0)


class DriverDefaults(BaseModel):
    """How the sensor's usual ROS 2 driver publishes its clouds (read by the launch files, not the
    simulator): ``kdmos.launch.py sensor:=vlp16`` subscribes this topic and sets the node's
    ``scan_rate`` from the preset's ``rate_hz``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cloud_topic: str = Field(min_length=1)


class SensorPreset(BaseModel):
    """One spinning LiDAR: its beams, azimuth grid, range limits, noise and intensity model.

    Beams are given either as ``elevations_deg`` (any list, for sensors with irregular spacing) or
    as ``beam_blocks`` (evenly spaced groups). Rays of one azimuth column fire together; the sensor
    sits ``mounting_height_m`` above the road, level with it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    source: str
    elevations_deg: list[float] | None = None
    beam_blocks: list[BeamBlock] | None = None
    azimuth_step_deg: float = Field(gt=0.0, le=10.0)
    rate_hz: float = Field(gt=0.0)
    min_range_m: float = Field(ge=0.0)
    max_range_m: float = Field(gt=0.0)
    range_noise_m: float = Field(ge=0.0)
    dropout: float = Field(ge=0.0, lt=1.0)
    mounting_height_m: float = Field(gt=0.0)
    intensity_range_falloff: float = Field(ge=0.0, le=1.0)
    intensity_noise: float = Field(ge=0.0, le=1.0)
    intensity: dict[str, IntensityModel]
    ros: DriverDefaults | None = None

    @model_validator(mode="after")
    def _check(self) -> SensorPreset:
        if (self.elevations_deg is None) == (self.beam_blocks is None):
            raise ValueError("give exactly one of elevations_deg and beam_blocks")
        if self.elevations_deg is not None and not self.elevations_deg:
            raise ValueError("elevations_deg is empty")
        if any(abs(e) >= 90.0 for e in self.elevations_deg or []):
            raise ValueError("elevations must lie strictly between -90 and 90 degrees")
        if self.min_range_m >= self.max_range_m:
            raise ValueError("min_range_m must be below max_range_m")
        missing = sorted(set(SURFACE_INDEX) - set(self.intensity))
        unknown = sorted(set(self.intensity) - set(SURFACE_INDEX))
        if missing or unknown:
            raise ValueError(f"intensity surfaces: missing {missing}, unknown {unknown}")
        return self

    @property
    def elevations(self) -> np.ndarray:
        """Beam elevation angles in radians, float64, top beam first."""
        if self.elevations_deg is not None:
            degrees = np.array(self.elevations_deg, dtype=np.float64)
        else:
            degrees = np.concatenate(
                [np.linspace(b.top_deg, b.bottom_deg, b.count) for b in self.beam_blocks or []]
            )
        return np.radians(np.sort(degrees)[::-1])

    @property
    def n_columns(self) -> int:
        """Azimuth columns per revolution."""
        return round(360.0 / self.azimuth_step_deg)

    @property
    def azimuths(self) -> np.ndarray:
        """Column azimuths in radians, float64, increasing from just above -π (LiDAR x forward, y left)."""
        step = 2.0 * np.pi / self.n_columns
        return -np.pi + (np.arange(self.n_columns) + 0.5) * step

    def intensity_table(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, sd) float64 arrays indexed by surface index (see :mod:`kdmos_ros.sim.classes`)."""
        mean = np.zeros(len(SURFACE_INDEX))
        sd = np.zeros(len(SURFACE_INDEX))
        for name, index in SURFACE_INDEX.items():
            mean[index] = self.intensity[name].mean
            sd[index] = self.intensity[name].sd
        return mean, sd


def preset_dir() -> Path:
    """``config/sensors`` of this installation (source checkout, pip or colcon install)."""
    share = share_dir()
    if share is None:
        raise SensorError("cannot find the kdmos_ros share directory holding config/sensors/")
    return share / "config" / "sensors"


def preset_names() -> list[str]:
    """Names of the shipped presets, sorted."""
    directory = preset_dir()
    return sorted(p.stem for p in directory.glob("*.yaml")) if directory.is_dir() else []


def load_sensor(name_or_path: str | Path) -> SensorPreset:
    """A shipped preset by name (``hdl64``) or any preset YAML file by path."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith((".yaml", ".yml")) or path.is_file()):
        path = preset_dir() / f"{text}.yaml"
        if not path.is_file():
            raise SensorError(
                f"unknown sensor {text!r}; presets: {', '.join(preset_names())} (or a YAML path)"
            )
    if not path.is_file():
        raise SensorError(f"sensor preset file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise SensorError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    try:
        return SensorPreset.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "preset"
        raise SensorError(f"{path}: {where}: {first['msg']}") from None
