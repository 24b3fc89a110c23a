"""ROS bags in and out with ``rosbags`` (no ROS installation needed).

Reading: ROS 1 ``.bag`` files and ROS 2 bags (a directory with ``metadata.yaml``, or a bare
``.mcap`` / ``.db3`` file), through rosbags' ``AnyReader``. Message types come from the definitions
stored in the bag; ROS 2 bags without them fall back to the ROS 2 Humble type store.

Writing: ROS 2 bags in MCAP (default) or SQLite 3 storage, readable by ROS 2 Humble's ``ros2 bag``:

- rosbag2 metadata **version 8**: the newest version whose ``offered_qos_profiles`` is still the
  YAML string Humble parses (version 9 changed it to a YAML list, which Humble's parser rejects);
  the fields versions 6–8 added (``custom_data``, ``type_description_hash``, ``ros_distro``) are
  ones Humble does not read.
- Every topic gets explicit QoS profiles in values Humble knows (no Iron+ ``BEST_AVAILABLE``):
  an empty profile list makes ``ros2 bag play`` guess, and a guessed VOLATILE ``/tf_static``
  reaches no late subscriber.
- Messages are serialised with the ROS 2 Humble type store, so the labelled clouds of a ROS 1 bag
  carry ROS 2 headers (no ``seq``).

Errors are :class:`BagError` (a :class:`~kdmos_ros.errors.KdmosError`) with one clear line each: a
missing or unreadable bag, a missing topic (listing the topics there are), an existing output.
"""

from __future__ import annotations

import functools
import shutil
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import (
    Connection,
    ConnectionExtRosbag1,
    ConnectionExtRosbag2,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag1 import ReaderError as Rosbag1ReaderError
from rosbags.rosbag2 import ReaderError as Rosbag2ReaderError
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from rosbags.serde import SerdeError
from rosbags.typesys import Stores, get_typestore

from kdmos_ros.errors import KdmosError

__all__ = [
    "CLOUD_TYPE",
    "HUMBLE_METADATA_VERSION",
    "ODOMETRY_TYPE",
    "STORAGES",
    "TF_STATIC_TOPIC",
    "TF_TOPIC",
    "TF_TYPES",
    "BagError",
    "BagMessage",
    "BagWriter",
    "CorruptBagError",
    "MissingTopicError",
    "OutputExistsError",
    "default_qos",
    "deserialize",
    "humble_qos",
    "humble_typestore",
    "open_bag",
    "prepare_output",
    "read_messages",
    "ros2_header",
    "ros2_typestore_for",
    "to_cdr",
    "topic_connections",
]

CLOUD_TYPE = "sensor_msgs/msg/PointCloud2"
ODOMETRY_TYPE = "nav_msgs/msg/Odometry"
TF_TYPES = ("tf2_msgs/msg/TFMessage", "tf/msg/tfMessage")  # ROS 2 / ROS 1 (old tf) names
TF_TOPIC = "/tf"
TF_STATIC_TOPIC = "/tf_static"
HUMBLE_METADATA_VERSION = 8
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}

# What a rosbags reader raises on a file it cannot parse. struct.error and EOFError come out of a
# truncated file's record parser; UnicodeDecodeError out of a garbled header.
_READ_ERRORS = (
    AnyReaderError,
    Rosbag1ReaderError,
    Rosbag2ReaderError,
    SerdeError,
    struct.error,
    EOFError,
    UnicodeDecodeError,
)


class BagError(KdmosError):
    """A bag cannot be read or written as asked."""


class CorruptBagError(BagError):
    """The input is not a bag rosbags can read (truncated, garbled, unknown storage)."""


class MissingTopicError(BagError):
    """The bag has no such topic, or it carries another message type."""


class OutputExistsError(BagError):
    """The output bag exists and ``force`` was not given."""


@functools.lru_cache(maxsize=1)
def humble_typestore() -> Any:
    """The ROS 2 Humble message types (built once; rosbags generates the classes on first use)."""
    return get_typestore(Stores.ROS2_HUMBLE)


@contextmanager
def open_bag(path: str | Path) -> Iterator[AnyReader]:
    """An open ``AnyReader`` on a ROS 1 or ROS 2 bag, with rosbags' errors as :class:`BagError`."""
    bag = Path(path)
    if not bag.exists():
        raise BagError(f"input bag not found: {bag}")
    if bag.is_dir() and not (bag / "metadata.yaml").exists():
        raise CorruptBagError(
            f"{bag} is a directory without metadata.yaml: not a ROS 2 bag "
            "(give the bag directory, or its .mcap / .db3 file)"
        )
    try:
        reader = AnyReader([bag], default_typestore=humble_typestore())
        reader.open()
    except _READ_ERRORS as error:
        raise CorruptBagError(f"cannot read {bag} as a ROS 1 or ROS 2 bag: {error}") from None
    try:
        yield reader
    finally:
        reader.close()


@dataclass(frozen=True)
class BagMessage:
    """One message as stored: its connection, bag time (ns), and raw serialised bytes."""

    connection: Connection
    timestamp: int
    raw: bytes | memoryview


def read_messages(reader: AnyReader, connections: Sequence[Connection]) -> Iterator[BagMessage]:
    """Messages of ``connections`` in bag-time order; a damaged file becomes :class:`CorruptBagError`."""
    if not connections:
        return
    iterator = reader.messages(connections=list(connections))
    while True:
        try:
            connection, timestamp, raw = next(iterator)
        except StopIteration:
            return
        except _READ_ERRORS as error:
            raise CorruptBagError(f"{reader.paths[0]} is damaged: {error}") from None
        yield BagMessage(connection, timestamp, raw)


def deserialize(reader: AnyReader, message: BagMessage) -> Any:
    """The message object of ``message`` (ROS 1 or CDR, as the bag stores it)."""
    try:
        return reader.deserialize(message.raw, message.connection.msgtype)
    except _READ_ERRORS as error:
        raise _message_error(message, f"at {message.timestamp} ns cannot be decoded", error) from None


def _message_error(message: BagMessage, problem: str, error: Exception) -> CorruptBagError:
    """:class:`CorruptBagError` for one message that rosbags cannot read: its type, topic, ``problem``."""
    connection = message.connection
    return CorruptBagError(f"a {connection.msgtype} message on {connection.topic} {problem}: {error}")


def topic_connections(reader: AnyReader, topic: str, msgtypes: Sequence[str]) -> list[Connection]:
    """The connections of ``topic``; :class:`MissingTopicError` when absent or of another type."""
    connections = [c for c in reader.connections if c.topic == topic]
    if not connections:
        available = sorted({f"{c.topic} ({c.msgtype})" for c in reader.connections})
        raise MissingTopicError(
            f"{reader.paths[0]} has no topic {topic}; its topics are: {', '.join(available) or 'none'}"
        )
    wrong = sorted({c.msgtype for c in connections if c.msgtype not in msgtypes})
    if wrong:
        raise MissingTopicError(f"topic {topic} carries {', '.join(wrong)}, not {' or '.join(msgtypes)}")
    return connections


def ros2_header(header: Any) -> Any:
    """A ROS 2 Humble ``std_msgs/Header`` with the stamp and frame of ``header`` (ROS 1 or ROS 2)."""
    types = humble_typestore().types
    stamp = header.stamp
    return types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=int(stamp.sec), nanosec=int(stamp.nanosec)),
        frame_id=str(header.frame_id),
    )


# QoS written for topics that come without a usable one: what the ROS 2 sensor and TF publishers
# offer (keep last, reliable; /tf_static latched as transient local). Durations 0 mean "not set".
_UNSET = QosTime(0, 0)


def default_qos(latched: bool = False) -> list[Qos]:
    return [
        Qos(
            QosHistory.KEEP_LAST,
            1 if latched else 10,
            QosReliability.RELIABLE,
            QosDurability.TRANSIENT_LOCAL if latched else QosDurability.VOLATILE,
            _UNSET,
            _UNSET,
            QosLiveliness.AUTOMATIC,
            _UNSET,
            avoid_ros_namespace_conventions=False,
        )
    ]


def humble_qos(connection: Connection) -> list[Qos]:
    """QoS for writing ``connection``'s topic that Humble can parse: the bag's own where it has
    one in Humble's values, else :func:`default_qos` (latched for ROS 1 latched topics and /tf_static)."""
    ext = connection.ext
    latched = connection.topic == TF_STATIC_TOPIC
    if isinstance(ext, ConnectionExtRosbag1):
        latched = latched or bool(ext.latching)
    if isinstance(ext, ConnectionExtRosbag2) and ext.offered_qos_profiles:
        profiles = []
        for qos in ext.offered_qos_profiles:
            if (
                qos.reliability not in (QosReliability.RELIABLE, QosReliability.BEST_EFFORT)
                or qos.durability not in (QosDurability.VOLATILE, QosDurability.TRANSIENT_LOCAL)
                or qos.history not in (QosHistory.KEEP_LAST, QosHistory.KEEP_ALL)
                or qos.liveliness not in (QosLiveliness.AUTOMATIC, QosLiveliness.MANUAL_BY_TOPIC)
            ):
                return default_qos(latched)
            profiles.append(qos)
        return profiles
    return default_qos(latched)


def prepare_output(path: str | Path, force: bool, inputs: Sequence[Path] = ()) -> Path:
    """Make room for the output bag directory: refuse an existing one unless ``force``."""
    out = Path(path)
    for source in inputs:
        if out.resolve() == source.resolve() or source.resolve().is_relative_to(out.resolve()):
            raise BagError(f"output {out} would overwrite the input bag {source}")
    if out.exists() or out.is_symlink():
        if not force:
            raise OutputExistsError(f"{out} exists; pass --force to overwrite it")
        if out.is_dir() and not out.is_symlink():
            if any(out.iterdir()) and not (out / "metadata.yaml").exists():
                # --force replaces a bag, not whatever folder the user pointed at by mistake.
                raise BagError(f"{out} is a non-empty directory that is not a ROS 2 bag; not removing it")
            shutil.rmtree(out)
        else:
            out.unlink()
    if not out.parent.exists():
        raise BagError(f"the folder for the output bag does not exist: {out.parent}")
    return out


class BagWriter:
    """A ROS 2 bag being written (MCAP or SQLite 3, metadata version 8); use as a context manager.

    On an exception inside the ``with`` block the half-written bag is removed, so a failed run
    never leaves a bag that looks complete.
    """

    def __init__(self, path: str | Path, storage: str = "mcap") -> None:
        if storage not in STORAGES:
            raise BagError(f"unknown storage {storage!r}; choose {' or '.join(STORAGES)}")
        self.path = Path(path)
        self.storage = storage
        self._writer = Writer(self.path, version=HUMBLE_METADATA_VERSION, storage_plugin=STORAGES[storage])
        self._topics: dict[str, Connection] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> BagWriter:
        try:
            self._writer.open()
        except WriterError as error:
            raise BagError(f"cannot create {self.path}: {error}") from None
        return self

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        if exc_type is None:
            self._writer.close()
            return
        try:
            self._writer.close()
        finally:
            shutil.rmtree(self.path, ignore_errors=True)

    def add_topic(self, topic: str, msgtype: str, typestore: Any, qos: Sequence[Qos]) -> None:
        """Declare ``topic`` with its type (defined in ``typestore``) and QoS."""
        if topic in self._topics:
            raise BagError(f"topic {topic} would be written twice to {self.path}")
        self._topics[topic] = self._writer.add_connection(
            topic, msgtype, typestore=typestore, offered_qos_profiles=list(qos)
        )
        self.counts[topic] = 0

    def has_topic(self, topic: str) -> bool:
        return topic in self._topics

    def write_raw(self, topic: str, timestamp: int, data: bytes | memoryview) -> None:
        """Write already CDR-serialised bytes."""
        self._writer.write(self._topics[topic], timestamp, data)
        self.counts[topic] += 1

    def write(self, topic: str, timestamp: int, message: Any, typestore: Any | None = None) -> None:
        """Serialise ``message`` (CDR, with ``typestore``, default Humble) and write it."""
        store = typestore or humble_typestore()
        msgtype = self._topics[topic].msgtype
        self.write_raw(topic, timestamp, store.serialize_cdr(message, msgtype))


def ros2_typestore_for(reader: AnyReader) -> Any:
    """The type store to write ``reader``'s own messages into a ROS 2 bag: the bag's types, with
    ROS 2's ``std_msgs/Header`` (no ``seq``) for a ROS 1 bag."""
    if reader.is2:
        return reader.typestore
    store = get_typestore(Stores.EMPTY)
    header = humble_typestore().fielddefs["std_msgs/msg/Header"]
    store.register({**reader.typestore.fielddefs, "std_msgs/msg/Header": header})
    return store


def to_cdr(reader: AnyReader, store: Any, message: BagMessage) -> bytes | memoryview:
    """``message`` as ROS 2 CDR bytes: unchanged from a ROS 2 bag, converted from a ROS 1 one
    (rosbags drops the header's ``seq`` when ``store`` has the ROS 2 header)."""
    if reader.is2:
        return message.raw
    try:
        return store.ros1_to_cdr(message.raw, message.connection.msgtype)
    except _READ_ERRORS as error:
        raise _message_error(message, "cannot be converted to ROS 2", error) from None
