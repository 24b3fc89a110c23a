"""An offline TF tree: ``/tf`` and ``/tf_static`` messages in, ``target ← source`` at a stamp out.

The ROS node uses tf2_ros; tools that read bags (``kdmos label-bag``) have no tf2, so this is the
same idea in numpy: every frame has one parent; a static transform holds at all times; a dynamic
one is a :class:`~kdmos_ros.odometry.poses.PoseBuffer` of its samples, interpolated between them
the way ``tf2::BufferCore`` does (linear translation, slerp rotation). Lookups walk from both frames
up to their common ancestor and compose the transforms on the way.

Frame ids are compared without a leading ``/`` (ROS 1 bags often write ``/odom``, ROS 2 ``odom``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from kdmos_ros.odometry.poses import (
    PoseBuffer,
    PoseLookupError,
    invert_pose,
    stamp_to_seconds,
    transform_to_pose,
)

__all__ = ["TfLookupError", "TfTree", "normalize_frame"]


class TfLookupError(PoseLookupError):
    """A transform the tree cannot give: unknown frame, frames not connected, stamp out of range."""


def normalize_frame(frame: str) -> str:
    """``frame`` without the leading slash of ROS 1 (``/odom`` and ``odom`` are one frame)."""
    return str(frame).lstrip("/")


class TfTree:
    """Transforms between frames over time, fed with ``tf2_msgs/TFMessage`` contents.

    ``max_gap``: the largest spacing of two samples of one dynamic transform that is still
    interpolated (a longer silence is a missing transform, not a straight line).
    ``max_extrapolation``: how far past the first/last sample of a dynamic transform a lookup may
    reach (at the velocity of the last two samples). tf2 allows none; a little keeps the scans at
    the very ends of a bag.
    """

    def __init__(self, max_gap: float = 0.5, max_extrapolation: float = 0.1) -> None:
        self.max_gap = float(max_gap)
        self.max_extrapolation = float(max_extrapolation)
        self._parents: dict[str, str] = {}
        self._static: dict[str, np.ndarray] = {}  # child -> parent ← child
        self._dynamic: dict[str, PoseBuffer] = {}  # child -> samples of parent ← child

    @property
    def frames(self) -> set[str]:
        """Every frame named by a transform so far, as parent or child."""
        return set(self._parents) | set(self._parents.values())

    def __len__(self) -> int:
        """Number of edges (child frames)."""
        return len(self._parents)

    def clear(self) -> None:
        self._parents.clear()
        self._static.clear()
        self._dynamic.clear()

    def add(self, parent: str, child: str, stamp: float, pose: np.ndarray, static: bool = False) -> None:
        """Record ``parent ← child`` at ``stamp`` seconds (any time at all when ``static``).

        A child that gets a new parent forgets its old transforms, as tf2 re-parents a frame.
        """
        parent, child = normalize_frame(parent), normalize_frame(child)
        if not parent or not child:
            raise TfLookupError(f"transform with an empty frame id (parent {parent!r}, child {child!r})")
        if parent == child:
            raise TfLookupError(f"transform from frame {child!r} to itself")
        if self._parents.get(child, parent) != parent:
            self._static.pop(child, None)
            self._dynamic.pop(child, None)
        self._parents[child] = parent
        if static:
            self._dynamic.pop(child, None)
            self._static[child] = np.asarray(pose, dtype=np.float64).copy()
            return
        self._static.pop(child, None)
        buffer = self._dynamic.get(child)
        if buffer is None:
            buffer = PoseBuffer(
                self.max_gap,
                capacity=None,
                source=f"transform {parent} <- {child}",
                max_extrapolation=self.max_extrapolation,
            )
            self._dynamic[child] = buffer
        buffer.add(stamp, pose)

    def add_transforms(self, transforms: Iterable[Any], static: bool = False) -> int:
        """Add ``geometry_msgs/TransformStamped`` messages (rclpy or rosbags); returns how many."""
        count = 0
        for transform in transforms:
            self.add(
                transform.header.frame_id,
                transform.child_frame_id,
                stamp_to_seconds(transform.header.stamp),
                transform_to_pose(transform.transform),
                static=static,
            )
            count += 1
        return count

    def add_message(self, message: Any, static: bool = False) -> int:
        """Add a ``tf2_msgs/TFMessage`` (``static=True`` for ``/tf_static``); returns how many transforms."""
        return self.add_transforms(message.transforms, static=static)

    def _edge(self, child: str, stamp: float) -> np.ndarray:
        if child in self._static:
            return self._static[child]
        try:
            return self._dynamic[child].lookup(stamp)
        except PoseLookupError as error:
            raise TfLookupError(str(error)) from None

    def _chain(self, frame: str) -> list[str]:
        """``frame``, its parent, its grandparent, ... up to the root."""
        chain = [frame]
        while chain[-1] in self._parents:
            parent = self._parents[chain[-1]]
            if parent in chain:
                raise TfLookupError(f"the TF tree has a loop: {' -> '.join([*chain, parent])}")
            chain.append(parent)
        return chain

    def _to_ancestor(self, chain: list[str], stamp: float) -> np.ndarray:
        """``chain[-1] ← chain[0]`` by composing the edges of the chain."""
        pose = np.eye(4)
        for child in chain[:-1]:
            pose = self._edge(child, stamp) @ pose
        return pose

    def _paths(self, target: str, source: str) -> tuple[list[str], list[str]]:
        """The chains from ``source`` and from ``target`` up to their common ancestor (included)."""
        frames = self.frames
        for frame, role in ((target, "target"), (source, "source")):
            if frame not in frames:
                known = ", ".join(sorted(frames)) or "none: no /tf or /tf_static messages"
                raise TfLookupError(f"{role} frame {frame!r} is not in the TF tree (known frames: {known})")
        source_chain = self._chain(source)
        target_chain = self._chain(target)
        common = next((frame for frame in source_chain if frame in target_chain), None)
        if common is None:
            raise TfLookupError(
                f"frames {target!r} and {source!r} are not connected: {target!r} belongs to the tree "
                f"rooted at {target_chain[-1]!r}, {source!r} to the one rooted at {source_chain[-1]!r}"
            )
        return source_chain[: source_chain.index(common) + 1], target_chain[: target_chain.index(common) + 1]

    def check(self, target_frame: str, source_frame: str) -> None:
        """Raise :class:`TfLookupError` unless both frames exist and are connected (at some time)."""
        target, source = normalize_frame(target_frame), normalize_frame(source_frame)
        if target != source:
            self._paths(target, source)

    def lookup(self, target_frame: str, source_frame: str, stamp: float) -> np.ndarray:
        """``target ← source`` at ``stamp`` seconds: maps points from ``source_frame`` into ``target_frame``.

        For a LiDAR pose in the odom frame: ``lookup("odom", cloud.header.frame_id, stamp)``.
        """
        target, source = normalize_frame(target_frame), normalize_frame(source_frame)
        if target == source:
            return np.eye(4)
        source_path, target_path = self._paths(target, source)
        common_from_source = self._to_ancestor(source_path, stamp)
        common_from_target = self._to_ancestor(target_path, stamp)
        return invert_pose(common_from_target) @ common_from_source
