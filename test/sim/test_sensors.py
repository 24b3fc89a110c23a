"""Sensor presets: the shipped YAML files describe the datasheets, and bad presets fail clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from kdmos_ros.sim.classes import SURFACE_INDEX
from kdmos_ros.sim.sensors import SensorError, load_sensor, preset_dir, preset_names


def test_shipped_presets_match_their_datasheets() -> None:
    assert preset_names() == ["hdl32", "hdl64", "os1-128", "pandar-xt32", "vlp16", "vlp32"]
    hdl64 = load_sensor("hdl64")
    elevations = np.degrees(hdl64.elevations)
    assert len(elevations) == 64
    assert elevations[0] == pytest.approx(2.0) and elevations[-1] == pytest.approx(-24.8)
    assert np.all(np.diff(elevations) < 0)  # top beam first, strictly descending
    # Upper block ~1/3 degree apart, lower block ~1/2 degree (HDL-64E S2 datasheet).
    assert np.diff(elevations[:32]).mean() == pytest.approx(-1 / 3, abs=0.01)
    assert np.diff(elevations[32:]).mean() == pytest.approx(-0.515, abs=0.01)
    assert hdl64.n_columns == 2083  # 0.1728 degrees: KITTI's spacing at 10 Hz
    assert hdl64.mounting_height_m == pytest.approx(1.73)
    assert len(hdl64.elevations) * hdl64.n_columns == pytest.approx(133_000, rel=0.01)

    vlp32 = load_sensor("vlp32")
    assert len(vlp32.elevations) == 32
    assert np.degrees(vlp32.elevations[[0, -1]]) == pytest.approx([15.0, -25.0])
    vlp16 = load_sensor("vlp16")
    assert np.degrees(vlp16.elevations) == pytest.approx(np.arange(15.0, -16.0, -2.0))
    os1 = load_sensor("os1-128")
    assert len(os1.elevations) == 128 and os1.n_columns == 2048
    hdl32 = load_sensor("hdl32")  # nuScenes: 20 Hz, 1.84 m, intensity 0..255
    assert np.degrees(hdl32.elevations[[0, -1]]) == pytest.approx([10.67, -30.67])
    assert (hdl32.rate_hz, hdl32.mounting_height_m, hdl32.intensity_scale) == (20.0, 1.84, 255.0)
    xt32 = load_sensor("pandar-xt32")
    assert np.degrees(xt32.elevations) == pytest.approx(np.arange(15.0, -17.0, -1.0))
    for preset in (hdl64, vlp32, vlp16, os1, hdl32, xt32):
        mean, spread = preset.intensity_table()
        assert mean.shape == spread.shape == (len(SURFACE_INDEX),) and np.all((mean >= 0) & (mean <= 1))
        azimuths = preset.azimuths
        assert azimuths[0] > -np.pi and azimuths[-1] < np.pi
        assert np.diff(azimuths) == pytest.approx(np.full(len(azimuths) - 1, 2 * np.pi / preset.n_columns))


def test_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(SensorError, match=r"unknown sensor 'hdl16'.*hdl32, hdl64, os1-128, pandar-xt32"):
        load_sensor("hdl16")


def _write_variant(tmp_path: Path, **changes: object) -> Path:
    data = yaml.safe_load((preset_dir() / "vlp16.yaml").read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_custom_preset_file_loads_by_path(tmp_path: Path) -> None:
    preset = load_sensor(_write_variant(tmp_path, name="roof", mounting_height_m=2.2))
    assert preset.name == "roof" and preset.mounting_height_m == 2.2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"elevations_deg": [1.0, -1.0]}, "exactly one of elevations_deg and beam_blocks"),
        ({"dropout": 1.5}, "dropout"),
        ({"min_range_m": 200.0}, "min_range_m must be below max_range_m"),
        ({"intensity": {"road": {"mean": 0.2, "sd": 0.1}}}, "missing"),
        ({"azimuth_step_deg": None}, "azimuth_step_deg"),
    ],
)
def test_invalid_presets_fail_with_one_line(tmp_path: Path, changes: dict, message: str) -> None:
    with pytest.raises(SensorError, match=message) as caught:
        load_sensor(_write_variant(tmp_path, **changes))
    assert "\n" not in str(caught.value)
