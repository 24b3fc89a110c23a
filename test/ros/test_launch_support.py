"""What the launch files compute from their arguments; the sensor presets' ROS section."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kdmos_ros.errors import KdmosError
from kdmos_ros.ros.launch_support import dds_environment, launch_bool, node_launch
from kdmos_ros.ros.params import ParameterError
from kdmos_ros.sim.sensors import load_sensor, preset_names


def test_defaults_leave_everything_to_the_params_file() -> None:
    launch = node_launch()
    assert launch.remappings == []
    assert launch.parameters == {"use_sim_time": False}
    assert launch.string_parameters == frozenset()
    assert launch.rviz_fixed_frame == "odom"


def test_arguments_become_remappings_and_overrides() -> None:
    launch = node_launch(
        cloud_topic="/lidar/top",
        model="/opt/m.onnx",
        pose_source="odometry",
        fixed_frame="odom_lidar",
        use_sim_time="True",
        odom_topic="/odometry/filtered",
    )
    assert launch.remappings == [("points", "/lidar/top"), ("odom", "/odometry/filtered")]
    assert launch.parameters == {
        "use_sim_time": True,
        "model_path": "/opt/m.onnx",
        "pose_source": "odometry",
        "fixed_frame": "odom_lidar",
    }
    assert launch.rviz_fixed_frame == "odom_lidar"


def test_string_overrides_are_marked_to_stay_strings() -> None:
    # launch_ros (Humble) reads plain strings in a parameters dict as YAML: these would change type.
    names = {"model": "123", "fixed_frame": "on", "pose_source": "none"}
    assert [type(yaml.safe_load(text)) for text in names.values()] == [int, bool, str]
    assert yaml.safe_load("null") is None
    launch = node_launch(sensor="vlp16", use_sim_time="true", **names)
    assert launch.string_parameters == {"model_path", "fixed_frame", "pose_source"}
    typed = launch.typed_parameters(lambda text: ("str", text))
    assert typed == {
        "use_sim_time": True,
        "scan_rate": 10.0,
        "model_path": ("str", "123"),
        "fixed_frame": ("str", "on"),
        "pose_source": ("str", "none"),
    }
    assert launch.parameters["model_path"] == "123"  # the plain data is left as it was


def test_launch_file_passes_string_overrides_as_typed_parameter_values() -> None:
    text = (Path(__file__).resolve().parents[2] / "launch" / "kdmos.launch.py").read_text()
    assert "from launch_ros.parameter_descriptions import ParameterValue" in text
    assert "launch.typed_parameters(lambda text: ParameterValue(text, value_type=str))" in text
    assert "launch.parameters]" not in text


def test_sensor_preset_gives_topic_and_rate_unless_the_topic_is_given() -> None:
    launch = node_launch(sensor="os1-128")
    assert launch.remappings == [("points", "/ouster/points")]
    assert launch.parameters["scan_rate"] == 10.0
    assert node_launch(sensor="vlp16", cloud_topic="/front/points").remappings == [
        ("points", "/front/points")
    ]


def test_every_shipped_preset_names_its_driver_topic() -> None:
    names = preset_names()
    assert {"hdl64", "vlp32", "vlp16", "os1-128"} <= set(names)
    for name in names:
        preset = load_sensor(name)
        assert preset.ros is not None and preset.ros.cloud_topic.startswith("/"), name


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pose_source": "gps"}, "choose one of tf, odometry"),
        ({"use_sim_time": "maybe"}, "use_sim_time must be true or false"),
        ({"sensor": "hdl65"}, "unknown sensor 'hdl65'"),
    ],
)
def test_bad_arguments_fail_with_a_message(kwargs: dict, match: str) -> None:
    with pytest.raises(KdmosError, match=match):
        node_launch(**kwargs)


def test_launch_bool() -> None:
    assert launch_bool("TRUE") is True and launch_bool("0") is False


def test_mounting_arguments_pick_the_mounting_source() -> None:
    assert "mounting" not in node_launch(sensor="vlp16").parameters  # a preset is not your mounting
    low = node_launch(mounting_height="0.5", mounting_pitch="4").parameters
    assert (low["mounting"], low["mounting_height"], low["mounting_pitch"]) == ("fixed", 0.5, 4.0)
    tf = node_launch(base_frame="base_footprint", sensor_frame="lidar_top")
    assert tf.parameters["mounting"] == "tf" and "sensor_frame" in tf.string_parameters
    assert node_launch(mounting="auto", mounting_height="2.0").parameters["mounting"] == "auto"
    with pytest.raises(ParameterError, match="mounting_height must be a number"):
        node_launch(mounting_height="tall")
    with pytest.raises(ParameterError, match="mounting_pitch.*must lie in"):
        node_launch(mounting_pitch="60")
    with pytest.raises(ParameterError, match="choose one of auto, fixed, tf"):
        node_launch(mounting="guess")


SHIPPED_DDS = Path(__file__).resolve().parents[2] / "config" / "cyclonedds.xml"


def test_dds_config_is_left_alone_unless_asked() -> None:
    for text in ("", " ", "false", "0"):
        assert dds_environment(text, str(SHIPPED_DDS), {"CYCLONEDDS_URI": "file:///mine.xml"}) == ({}, "")


def test_dds_config_true_points_at_the_shipped_file_after_the_users_own() -> None:
    environment, note = dds_environment("true", str(SHIPPED_DDS), {})
    assert environment == {"CYCLONEDDS_URI": f"file://{SHIPPED_DDS}"}
    assert str(SHIPPED_DDS) in note and "no effect" not in note
    # Cyclone merges the list in order, later entries win: the user's interfaces stay, our buffer applies.
    environment, _ = dds_environment("shipped", str(SHIPPED_DDS), {"CYCLONEDDS_URI": "file:///etc/lo.xml"})
    assert environment == {"CYCLONEDDS_URI": f"file:///etc/lo.xml,file://{SHIPPED_DDS}"}


def test_dds_config_takes_a_path_and_names_a_missing_one(tmp_path: Path) -> None:
    own = tmp_path / "dds.xml"
    own.write_text("<CycloneDDS/>")
    assert dds_environment(str(own), str(SHIPPED_DDS), {})[0] == {"CYCLONEDDS_URI": f"file://{own}"}
    with pytest.raises(ParameterError, match="dds_config.*nope.xml"):
        dds_environment(str(tmp_path / "nope.xml"), str(SHIPPED_DDS), {})


def test_dds_config_says_when_another_rmw_ignores_it() -> None:
    _, note = dds_environment("true", str(SHIPPED_DDS), {"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"})
    assert "no effect" in note and "rmw_fastrtps_cpp" in note


def test_shipped_dds_config_asks_for_a_big_buffer_and_accepts_what_the_kernel_grants() -> None:
    import xml.etree.ElementTree as ElementTree

    root = ElementTree.parse(SHIPPED_DDS).getroot()
    (buffer,) = root.iter("{https://cdds.io/config}SocketReceiveBufferSize")
    # A min above net.core.rmem_max would stop every process from joining the domain.
    assert buffer.get("min") == "default"
    assert buffer.get("max").endswith("MB") and int(buffer.get("max")[:-2]) >= 8
