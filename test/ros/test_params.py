"""The node's parameter schema, its checks, and config/kdmos.yaml against it."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from kdmos_ros.ros.params import (
    PARAMETERS,
    POSE_SOURCES,
    SPECS,
    NodeSettings,
    ParameterError,
    model_file,
    settings_from,
)

ROOT = Path(__file__).resolve().parents[2]


def test_schema_and_settings_name_the_same_parameters_with_the_same_defaults() -> None:
    assert [f.name for f in fields(NodeSettings)] == [spec.name for spec in PARAMETERS]
    defaults = NodeSettings()
    for spec in PARAMETERS:
        assert getattr(defaults, spec.name) == spec.default, spec.name
        assert type(getattr(defaults, spec.name)) is type(spec.default), spec.name
        assert len(spec.description) > 30, spec.name
        assert spec.check(spec.default) == spec.default
        if spec.limits:
            assert spec.limits[0] <= spec.default <= spec.limits[1], spec.name


def test_only_what_can_change_safely_is_dynamic() -> None:
    dynamic = {spec.name for spec in PARAMETERS if spec.dynamic}
    assert dynamic == {
        "moving_threshold",
        "max_scan_age",
        "tf_timeout",
        "publish_moving",
        "publish_static",
        "static_includes_unknown",
    }
    assert "changeable at run time" in SPECS["moving_threshold"].constraints
    assert "one of: tf, odometry, lidar, static, none" in SPECS["pose_source"].constraints
    assert "from -1 to 1" in SPECS["moving_threshold"].constraints


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"pose_source": "gps"}, r"'pose_source' is 'gps'; choose one of tf, odometry"),
        ({"provider": "rocm"}, "choose one of auto, tensorrt, cuda, cpu"),
        ({"moving_threshold": 1.5}, r"'moving_threshold' is 1.5; it must lie in \[-1, 1\]"),
        ({"scan_rate": 0.0}, "scan_rate"),
        ({"publish_moving": "yes"}, "'publish_moving' must be a bool"),
        ({"inference_threads": 2.5}, "'inference_threads' must be a int"),
        ({"model": "x.onnx"}, "unknown parameter"),
        ({"pose_source": "lidar", "lidar_min_range": 50.0, "lidar_max_range": 40.0}, "lidar_min_range"),
        ({"fixed_frame": "/"}, "fixed_frame is empty"),
    ],
)
def test_bad_values_are_refused_naming_the_parameter(values: dict, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        settings_from(values)


def test_an_integer_for_a_double_is_accepted() -> None:
    # `ros2 param set ... moving_threshold 1` sends an INTEGER; rclpy refuses it for a DOUBLE
    # parameter, but a YAML file read here must not.
    assert settings_from({"moving_threshold": 1}).moving_threshold == 1.0


def test_runtime_updates_are_checked_and_all_or_nothing() -> None:
    settings = NodeSettings()
    changed = settings.updated({"moving_threshold": 0.8, "publish_static": False})
    assert (changed.moving_threshold, changed.publish_static) == (0.8, False)
    assert settings.moving_threshold == -1.0  # frozen: the old settings are untouched
    with pytest.raises(ParameterError, match="read at start only"):
        settings.updated({"moving_threshold": 0.8, "pose_source": "none"})
    with pytest.raises(ParameterError, match="must lie in"):
        settings.updated({"moving_threshold": -1.5})


def test_model_file_defaults_to_the_shipped_model() -> None:
    assert model_file(NodeSettings()) == ROOT / "models" / "kdmos_lite.onnx"
    assert model_file(NodeSettings(model_path="~/m.onnx")) == Path.home() / "m.onnx"
    assert model_file(NodeSettings(model_path="lite")) == ROOT / "models" / "kdmos_lite.onnx"
    assert model_file(NodeSettings(model_path="nano")) == ROOT / "models" / "kdmos_nano.onnx"
    int8 = model_file(NodeSettings(model_path="lite_int8"))
    assert int8 == ROOT / "models" / "kdmos_lite_int8.onnx" and int8.is_file()
    assert model_file(NodeSettings(model_path="nano.onnx")) == Path("nano.onnx")


def test_config_file_sets_known_parameters_to_valid_values() -> None:
    document = yaml.safe_load((ROOT / "config" / "kdmos.yaml").read_text())
    # `/**`, not `kdmos_node`: a node-name key would not match the node under a pushed namespace.
    assert list(document) == ["/**"]
    values = document["/**"]["ros__parameters"]
    settings = settings_from(values)
    # The file documents the defaults: a value that differs from the schema would be a surprise.
    assert set(values) == set(SPECS)
    for name in values:
        assert getattr(settings, name) == SPECS[name].default, name
        # rclpy refuses an int for a double parameter: every double has its decimal point.
        assert type(values[name]) is type(SPECS[name].default), name
    assert settings.pose_source in POSE_SOURCES


def test_readme_documents_every_parameter_with_its_default_and_dynamism() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+)` \| `([^`]*)` \|\s*(yes)?\s*\|", text, flags=re.MULTILINE)
    documented = {name: (default, dynamic == "yes") for name, default, dynamic in rows}
    assert list(documented) == [spec.name for spec in PARAMETERS]
    for spec in PARAMETERS:
        default = spec.default
        shown = '""' if default == "" else str(default).lower() if isinstance(default, bool) else str(default)
        assert documented[spec.name] == (shown, spec.dynamic), spec.name
