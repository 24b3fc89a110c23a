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
from kdmos_ros.pipeline.canonical import Mounting
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
    "random_sensor",
    "with_mounting",
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
    sits ``mounting_height_m`` above the road, tilted by ``mounting_roll_deg`` and
    ``mounting_pitch_deg`` (REP-103 angles: a positive pitch looks down). Intensities are reflectivities
    in 0..1 times ``intensity_scale`` (255 for a driver publishing 8-bit values).
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
    mounting_height_m: float = Field(gt=0.0, le=20.0)
    mounting_roll_deg: float = Field(0.0, ge=-15.0, le=15.0)
    mounting_pitch_deg: float = Field(0.0, ge=-15.0, le=15.0)
    intensity_scale: float = Field(1.0, gt=0.0)
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
    def mounting(self) -> Mounting:
        return Mounting(
            height_m=self.mounting_height_m,
            roll_deg=self.mounting_roll_deg,
            pitch_deg=self.mounting_pitch_deg,
        )

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


def load_sensor(name_or_path: str | Path, seed: int = 0) -> SensorPreset:
    """A shipped preset by name (``hdl64``), any preset YAML file by path, or ``random``: a sensor
    drawn by :func:`random_sensor` from ``seed`` (``random:N`` draws it from N)."""
    text = str(name_or_path)
    if text == "random" or text.startswith("random:"):
        number = text.partition(":")[2] or str(seed)
        if not number.isdigit():
            raise SensorError(f"random sensor seed must be a non-negative integer, got {number!r}")
        return random_sensor(int(number))
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


def with_mounting(
    sensor: SensorPreset, height: float | None = None, roll: float | None = None, pitch: float | None = None
) -> SensorPreset:
    """The same sensor mounted elsewhere: the given height (m), roll and pitch (deg) replace its own."""
    changes = {
        key: value
        for key, value in (
            ("mounting_height_m", height),
            ("mounting_roll_deg", roll),
            ("mounting_pitch_deg", pitch),
        )
        if value is not None
    }
    if not changes:
        return sensor
    try:
        return SensorPreset.model_validate({**sensor.model_dump(), **changes})
    except ValidationError as error:
        first = error.errors()[0]
        raise SensorError(f"{sensor.name}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


#: Rays per revolution a random sensor may have (an OS1-128 at 2048 columns has 262,144).
_MAX_RAYS = 300_000


def random_sensor(seed: int) -> SensorPreset:
    """A spinning LiDAR drawn at random, for training a model that is not tied to one sensor.

    Covers what robots and cars carry: 16 to 128 beams over a narrow (VLP-16), tall (HDL-64) or
    wide (OS0) vertical field of view, spaced evenly, in two blocks or bunched at the horizon;
    0.1-0.4 deg azimuth steps; 10 or 20 Hz; mounted 0.4-2.5 m high and tilted up to 5 deg in roll
    and pitch; range noise, dropout, darker or brighter surfaces and intensity published as 0..1,
    0..100 or 0..255. The same seed gives the same sensor.
    """
    rng = np.random.default_rng([seed, 0x5E7])
    beams = int(rng.choice([16, 24, 32, 40, 64, 96, 128]))
    if rng.random() < 0.15:  # dome-like wide field of view (OS0, Pandar QT)
        top, bottom = float(rng.uniform(30.0, 45.0)), float(rng.uniform(-45.0, -30.0))
    else:
        top, bottom = float(rng.uniform(2.0, 22.5)), float(rng.uniform(-30.0, -10.0))
    spacing = str(rng.choice(["uniform", "blocks", "bunched"]))
    if spacing == "uniform":
        elevations = np.linspace(top, bottom, beams)
    elif spacing == "blocks":  # a finer upper block, as the HDL-64's
        split = float(rng.uniform(0.3, 0.6)) * (top - bottom) + bottom
        upper = beams // 2
        elevations = np.concatenate(
            [np.linspace(top, split, upper), np.linspace(split - 0.5, bottom, beams - upper)]
        )
    else:  # dense around the horizon, sparse towards the edges, as the VLP-32C's
        u = np.linspace(-1.0, 1.0, beams)
        gamma = float(rng.uniform(1.5, 3.0))
        centre = float(rng.uniform(-3.0, 0.0))
        bunched = np.sign(u) * np.abs(u) ** gamma
        elevations = centre + np.where(u >= 0, top - centre, centre - bottom) * bunched
    rate = 20.0 if rng.random() < 0.3 else 10.0
    step = float(rng.uniform(0.1, 0.4)) * rate / 10.0
    step = max(step, 360.0 * beams / _MAX_RAYS)
    brightness = float(rng.uniform(0.4, 1.4))
    base = load_sensor("hdl64").intensity
    intensity = {
        name: IntensityModel(mean=float(np.clip(model.mean * brightness, 0.0, 1.0)), sd=model.sd)
        for name, model in base.items()
    }
    return SensorPreset(
        name=f"random-{seed}",
        description=f"random sensor {seed}: {beams} beams ({spacing}), {top:.1f} to {bottom:.1f} deg, "
        f"{rate:g} Hz",
        source="kdmos_ros.sim.sensors.random_sensor",
        elevations_deg=[round(float(e), 4) for e in np.sort(elevations)[::-1]],
        azimuth_step_deg=round(step, 5),
        rate_hz=rate,
        min_range_m=round(float(rng.uniform(0.3, 2.5)), 2),
        max_range_m=round(float(rng.uniform(80.0, 200.0)), 1),
        range_noise_m=round(float(rng.uniform(0.01, 0.04)), 3),
        dropout=round(float(rng.uniform(0.0, 0.15)), 3),
        mounting_height_m=round(float(rng.uniform(0.4, 2.5)), 3),
        mounting_roll_deg=round(float(rng.uniform(-5.0, 5.0)), 2),
        mounting_pitch_deg=round(float(rng.uniform(-5.0, 5.0)), 2),
        intensity_scale=float(rng.choice([1.0, 100.0, 255.0])),
        intensity_range_falloff=round(float(rng.uniform(0.0, 0.5)), 2),
        intensity_noise=round(float(rng.uniform(0.02, 0.1)), 3),
        intensity=intensity,
    )
