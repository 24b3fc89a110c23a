"""Read and write LiDAR sequences in the SemanticKITTI layout.

SemanticKITTI (Behley et al., "SemanticKITTI: A Dataset for Semantic Scene Understanding of LiDAR
Sequences", ICCV 2019) stores each KITTI odometry sequence as::

    ROOT/sequences/NN/velodyne/XXXXXX.bin   float32 rows (x, y, z, intensity), little-endian
    ROOT/sequences/NN/labels/XXXXXX.label   uint32 per point: semantic id (low 16 bits),
                                            instance id (high 16 bits)
    ROOT/sequences/NN/poses.txt             one 3x4 row-major pose of camera 0 per line (12 numbers);
                                            line i belongs to frame i
    ROOT/sequences/NN/calib.txt             "P0: ..." ... "P3: ...", "Tr: ..." (12 numbers each);
                                            Tr maps velodyne coordinates into camera-0 coordinates
    ROOT/sequences/NN/times.txt             one timestamp in seconds per line
    ROOT/sequences/NN/sensor.yaml           optional (this project's simulator writes it): the sensor
                                            preset, with its mounting height, roll and pitch

kdmos_ros uses this layout as its interchange format: the real dataset is read as is, and the
simulator writes its sequences the same way (DESIGN.md section 5), so training and evaluation code
sees one format.

Poses. The ground truth in ``poses.txt`` is the pose of the left camera, not of the LiDAR. Like the
SemanticKITTI API (``semantic-kitti-api``, Behley et al. ICCV 2019) and the KITTI odometry devkit
(readme: "Tr transforms a point from velodyne coordinates into the left rectified camera
coordinate system"), the reader converts them to LiDAR poses relative to the first frame::

    P'_i = Tr^-1 . P_0^-1 . P_i . Tr

so that ``P'_0`` is the identity and ``P'_i`` maps points of scan i into the LiDAR frame of scan 0.
The writer inverts this: given LiDAR poses ``L_i`` it stores camera poses ``Tr . L_i . Tr^-1``; read
back they give ``L_0^-1 . L_i``, i.e. exactly ``L_i`` when ``L_0`` is the identity.

Labels. Two mappings from SemanticKITTI semantic ids are provided as module-level tables: the
official SemanticKITTI-MOS one (:func:`mos_labels`) and the KDMOS four-class one
(:func:`kdmos_labels`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import numpy.typing as npt
import yaml

from kdmos_ros.errors import KdmosError

__all__ = [
    "IGNORED_SEMANTIC_IDS",
    "KDMOS_CLASS_NAMES",
    "KDMOS_IGNORE",
    "KDMOS_LUT",
    "KDMOS_MOVABLE",
    "KDMOS_MOVING",
    "KDMOS_STATIC",
    "MOS_CLASS_NAMES",
    "MOS_IGNORE",
    "MOS_LUT",
    "MOS_MOVING",
    "MOS_STATIC",
    "MOVABLE_SEMANTIC_IDS",
    "MOVING_SEMANTIC_IDS",
    "InvalidDataError",
    "LabelLengthError",
    "MalformedFileError",
    "MissingCalibError",
    "MissingFileError",
    "MissingPoseError",
    "SemanticKittiError",
    "SemanticKittiSequence",
    "SemanticKittiWriter",
    "TruncatedScanError",
    "camera_poses_from_lidar",
    "create_sequence",
    "kdmos_labels",
    "lidar_poses_from_camera",
    "mos_labels",
    "open_sequence",
    "pack_labels",
    "sequence_path",
    "unpack_labels",
]

PathLike = Union[str, "os.PathLike[str]"]

# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


class SemanticKittiError(KdmosError):
    """A SemanticKITTI sequence on disk (or data handed to the writer) is not usable."""


class MissingFileError(SemanticKittiError, FileNotFoundError):
    """A sequence directory or one of its files does not exist.

    Also a :class:`FileNotFoundError`, so callers that already handle missing files keep working.
    """

    def __init__(self, path: PathLike, what: str = "file") -> None:
        self.path = Path(path)
        super().__init__(f"{what} not found: {self.path}")

    def __str__(self) -> str:
        # OSError's own __str__ would prefix "[Errno None]" noise when errno is unset.
        return str(self.args[0])


class MalformedFileError(SemanticKittiError):
    """A text file (poses, calib, times) cannot be parsed."""


class TruncatedScanError(SemanticKittiError):
    """A ``.bin`` scan whose size is not a whole number of 16-byte (x, y, z, intensity) rows."""


class LabelLengthError(SemanticKittiError):
    """A ``.label`` file that is not one uint32 per point of its scan."""


class MissingPoseError(MalformedFileError):
    """``poses.txt`` lacks the row of a frame, or a row does not hold 12 numbers."""


class MissingCalibError(MalformedFileError):
    """``calib.txt`` has no usable ``Tr:`` (velodyne to camera) entry."""


class InvalidDataError(SemanticKittiError, ValueError):
    """Arrays handed to the writer or the label mappings have the wrong shape, type or range."""


# --------------------------------------------------------------------------------------------------
# Label mappings
# --------------------------------------------------------------------------------------------------

# SemanticKITTI-MOS (Chen et al., "Moving Object Segmentation in 3D LiDAR Data: A Learning-based
# Approach Exploiting Sequential Data", RA-L 2021): unlabeled (0) and outlier (1) are ignored, the
# moving-* classes 251-259 are moving, every other id is static. The output values follow the runtime
# node's convention for published labels (0 static, 1 moving, 255 unknown), so evaluation and the
# node share one encoding.
MOS_STATIC = 0
MOS_MOVING = 1
MOS_IGNORE = 255
MOS_CLASS_NAMES: dict[int, str] = {MOS_STATIC: "static", MOS_MOVING: "moving", MOS_IGNORE: "ignore"}

# KDMOS (Cao et al., arXiv:2506.14130, 2025) splits "static" further: objects of classes that can
# move but stand still in this scan are "movable", which is easier to learn than lumping parked cars
# with buildings. Class indices are contiguous because they index logits.
KDMOS_IGNORE = 0
KDMOS_STATIC = 1
KDMOS_MOVABLE = 2
KDMOS_MOVING = 3
KDMOS_CLASS_NAMES: tuple[str, ...] = ("ignore", "static", "movable", "moving")

IGNORED_SEMANTIC_IDS: tuple[int, ...] = (0, 1)  # unlabeled, outlier
MOVING_SEMANTIC_IDS: tuple[int, ...] = tuple(range(251, 260))  # 251 "moving" and 252-259 moving-*
# car, bicycle, bus, motorcycle, on-rails, truck, other-vehicle, person, bicyclist, motorcyclist,
# and 250 (the generic "movable" id of the KDMOS label config).
MOVABLE_SEMANTIC_IDS: tuple[int, ...] = (10, 11, 13, 15, 16, 18, 20, 30, 31, 32, 250)

_N_SEMANTIC = 1 << 16  # semantic ids occupy the low 16 bits of a .label entry


def _build_lut(default: int, assignments: Iterable[tuple[Iterable[int], int]]) -> np.ndarray:
    lut = np.full(_N_SEMANTIC, default, dtype=np.uint8)
    for ids, value in assignments:
        lut[list(ids)] = value
    lut.setflags(write=False)  # shared module state: a stray in-place edit would corrupt every caller
    return lut


MOS_LUT: np.ndarray = _build_lut(
    MOS_STATIC, [(IGNORED_SEMANTIC_IDS, MOS_IGNORE), (MOVING_SEMANTIC_IDS, MOS_MOVING)]
)
"""uint8[65536]: SemanticKITTI semantic id -> MOS class (:data:`MOS_STATIC`/`MOVING`/`IGNORE`)."""

KDMOS_LUT: np.ndarray = _build_lut(
    KDMOS_STATIC,
    [
        (IGNORED_SEMANTIC_IDS, KDMOS_IGNORE),
        (MOVABLE_SEMANTIC_IDS, KDMOS_MOVABLE),
        (MOVING_SEMANTIC_IDS, KDMOS_MOVING),
    ],
)
"""uint8[65536]: SemanticKITTI semantic id -> KDMOS class index (see :data:`KDMOS_CLASS_NAMES`)."""


def _semantic_ids(semantic: npt.ArrayLike) -> np.ndarray:
    array = np.asarray(semantic)
    if array.dtype.kind not in "iu":
        raise InvalidDataError(f"semantic labels must be integers, got dtype {array.dtype}")
    if array.dtype.kind == "i" and array.size and int(array.min()) < 0:
        raise InvalidDataError(f"semantic labels must be >= 0, got minimum {int(array.min())}")
    # Masking lets callers pass raw packed .label values too; the instance bits are irrelevant here.
    # (Widened first so the mask is representable whatever the input's integer width.)
    return array.astype(np.int64, copy=False) & 0xFFFF


def mos_labels(semantic: npt.ArrayLike) -> np.ndarray:
    """Map SemanticKITTI semantic ids (or raw packed .label values) to SemanticKITTI-MOS classes.

    Returns a uint8 array of the input's shape with :data:`MOS_STATIC` (0), :data:`MOS_MOVING` (1)
    or :data:`MOS_IGNORE` (255).
    """
    return MOS_LUT[_semantic_ids(semantic)]


def kdmos_labels(semantic: npt.ArrayLike) -> np.ndarray:
    """Map SemanticKITTI semantic ids (or raw packed .label values) to the KDMOS four classes.

    Returns a uint8 array of the input's shape with :data:`KDMOS_IGNORE` (0), :data:`KDMOS_STATIC`
    (1), :data:`KDMOS_MOVABLE` (2) or :data:`KDMOS_MOVING` (3); names in :data:`KDMOS_CLASS_NAMES`.
    """
    return KDMOS_LUT[_semantic_ids(semantic)]


def pack_labels(semantic: npt.ArrayLike, instance: npt.ArrayLike | None = None) -> np.ndarray:
    """Pack semantic and instance ids (each 0..65535) into SemanticKITTI's uint32 per point."""
    sem = _checked_u16(semantic, "semantic")
    if instance is None:
        inst = np.zeros_like(sem)
    else:
        inst = _checked_u16(instance, "instance")
        if inst.shape != sem.shape:
            raise InvalidDataError(
                f"instance labels have shape {inst.shape} but semantic labels have shape {sem.shape}"
            )
    return (inst.astype(np.uint32) << np.uint32(16)) | sem.astype(np.uint32)


def unpack_labels(raw: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Split packed uint32 labels into (semantic, instance), both uint16."""
    packed = np.asarray(raw).astype(np.uint32, copy=False)
    return (packed & np.uint32(0xFFFF)).astype(np.uint16), (packed >> np.uint32(16)).astype(np.uint16)


def _checked_u16(values: npt.ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise InvalidDataError(f"{name} labels must be a 1-D array, got shape {array.shape}")
    if array.dtype.kind not in "iu":
        raise InvalidDataError(f"{name} labels must be integers, got dtype {array.dtype}")
    if array.size and (int(array.min()) < 0 or int(array.max()) > 0xFFFF):
        raise InvalidDataError(
            f"{name} labels must lie in 0..65535, got {int(array.min())}..{int(array.max())}"
        )
    return array.astype(np.uint16)


# --------------------------------------------------------------------------------------------------
# Pose conversion
# --------------------------------------------------------------------------------------------------


def _as_pose_stack(poses: npt.ArrayLike, what: str) -> np.ndarray:
    """(N, 4, 4) float64 from (N, 4, 4), (N, 3, 4) or (N, 12) input."""
    array = np.asarray(poses, dtype=np.float64)
    if array.ndim == 2 and array.shape[1] == 12:
        array = array.reshape(-1, 3, 4)
    if array.ndim != 3 or array.shape[1:] not in ((4, 4), (3, 4)):
        raise InvalidDataError(f"{what} must have shape (N, 4, 4), (N, 3, 4) or (N, 12), got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise InvalidDataError(f"{what} contain non-finite values")
    if array.shape[1] == 3:
        bottom = np.broadcast_to(np.array([0.0, 0.0, 0.0, 1.0]), (array.shape[0], 1, 4))
        array = np.concatenate([array, bottom], axis=1)
    elif not np.allclose(array[:, 3, :], [0.0, 0.0, 0.0, 1.0]):
        raise InvalidDataError(f"{what} must have a last row of (0, 0, 0, 1)")
    return array


def _as_transform(matrix: npt.ArrayLike, what: str) -> np.ndarray:
    return _as_pose_stack(np.asarray(matrix, dtype=np.float64)[np.newaxis], what)[0]


def lidar_poses_from_camera(camera_poses: npt.ArrayLike, velo_to_cam: npt.ArrayLike) -> np.ndarray:
    """Camera-0 poses as in ``poses.txt`` -> LiDAR poses relative to the first one, (N, 4, 4).

    ``P'_i = Tr^-1 . P_0^-1 . P_i . Tr`` (SemanticKITTI API, Behley et al. ICCV 2019; Tr from the
    KITTI odometry devkit calibration): conjugating by Tr changes the body frame from camera to
    LiDAR, and left-multiplying by ``P_0^-1`` makes the first scan's LiDAR frame the world frame.
    """
    cams = _as_pose_stack(camera_poses, "camera poses")
    tr = _as_transform(velo_to_cam, "Tr")
    if len(cams) == 0:
        return cams
    # Tr is a calibration, not an exact rigid transform, so invert it generally rather than by R^T.
    return np.linalg.inv(tr) @ np.linalg.inv(cams[0]) @ cams @ tr


def camera_poses_from_lidar(lidar_poses: npt.ArrayLike, velo_to_cam: npt.ArrayLike) -> np.ndarray:
    """LiDAR poses -> camera-0 poses ``Tr . L_i . Tr^-1`` for ``poses.txt``, (N, 4, 4).

    :func:`lidar_poses_from_camera` of the result is ``L_0^-1 . L_i``: exactly the input when the
    first LiDAR pose is the identity, the usual convention.
    """
    lidar = _as_pose_stack(lidar_poses, "LiDAR poses")
    tr = _as_transform(velo_to_cam, "Tr")
    return tr @ lidar @ np.linalg.inv(tr)


# --------------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------------


def sequence_path(root: PathLike, sequence: str | int) -> Path:
    """``ROOT/sequences/NN``; numeric sequences are zero-padded to two digits ("8" and 8 -> "08")."""
    name = str(sequence)
    if name.isdigit():
        name = f"{int(name):02d}"
    return Path(root) / "sequences" / name


def _frame_stem(frame: int) -> str:
    return f"{int(frame):06d}"


_FLOAT_FORMAT = "%.12e"  # KITTI's calib.txt style; 13 significant digits round-trip poses to ~1e-12


def _format_row(values: Iterable[float]) -> str:
    # Python's %-formatting is locale-independent and identical across platforms: byte-determinism.
    return " ".join(_FLOAT_FORMAT % float(v) for v in values)


def _read_text_lines(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise MissingFileError(path, what)
    lines = path.read_text(encoding="utf-8").splitlines()
    # A trailing newline or blank tail is harmless, but a blank line inside would shift every later
    # frame onto the wrong row, so only the tail is dropped.
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _parse_numbers(text: str, path: Path, line_no: int, error: type) -> list[float]:
    try:
        return [float(token) for token in text.split()]
    except ValueError:
        raise error(f"{path} line {line_no}: not a list of numbers: {text.strip()[:80]!r}") from None


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


class SemanticKittiSequence:
    """One sequence directory (``ROOT/sequences/NN``) opened for reading.

    Frames are keyed by their id, the integer value of the scan's file stem, not by list position, so
    a sequence holding only frames 5..9 still reads pose row 5 for frame 5. ``poses`` and ``times``
    are arrays aligned with :attr:`frames`. Text files are parsed lazily on first use and cached;
    scans and labels are read from disk on every call to keep memory flat over long sequences.
    """

    def __init__(self, directory: PathLike) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise MissingFileError(self.directory, "sequence directory")
        self.velodyne_dir = self.directory / "velodyne"
        self.labels_dir = self.directory / "labels"
        if not self.velodyne_dir.is_dir():
            raise MissingFileError(self.velodyne_dir, "velodyne directory")
        self._scan_paths = self._list_frames(self.velodyne_dir, ".bin")
        self.frames: tuple[int, ...] = tuple(sorted(self._scan_paths))
        self._label_paths: dict[int, Path] | None = None
        self._calib: dict[str, np.ndarray] | None = None
        self._camera_poses_all: np.ndarray | None = None
        self._lidar_poses_all: np.ndarray | None = None
        self._times_all: np.ndarray | None = None

    @staticmethod
    def _list_frames(directory: Path, suffix: str) -> dict[int, Path]:
        paths: dict[int, Path] = {}
        with os.scandir(directory) as entries:
            for entry in entries:
                if not entry.name.endswith(suffix) or not entry.is_file():
                    continue
                stem = entry.name[: -len(suffix)]
                if not stem.isdigit():
                    raise SemanticKittiError(f"{Path(entry.path)}: file name is not a frame number")
                frame = int(stem)
                if frame in paths:
                    raise SemanticKittiError(
                        f"{directory}: frame {frame} appears twice ({paths[frame].name}, {entry.name})"
                    )
                paths[frame] = Path(entry.path)
        return paths

    def __len__(self) -> int:
        return len(self.frames)

    def __contains__(self, frame: object) -> bool:
        return frame in self._scan_paths

    def __repr__(self) -> str:
        return f"SemanticKittiSequence({str(self.directory)!r}, frames={len(self)})"

    # ---- scans and labels ------------------------------------------------------------------------

    def scan_path(self, frame: int) -> Path:
        """Path of a frame's ``.bin``; :class:`MissingFileError` if the frame is not in the sequence."""
        try:
            return self._scan_paths[int(frame)]
        except KeyError:
            raise MissingFileError(self.velodyne_dir / f"{_frame_stem(frame)}.bin", "scan") from None

    def label_path(self, frame: int) -> Path:
        """Where a frame's ``.label`` is (or would be): same stem as its scan, under ``labels/``."""
        return self.labels_dir / (self.scan_path(frame).stem + ".label")

    def num_points(self, frame: int) -> int:
        """Point count of a frame, from the file size alone."""
        path = self.scan_path(frame)
        size = path.stat().st_size
        if size % 16:
            raise TruncatedScanError(
                f"{path}: {size} bytes is not a multiple of 16 (4 float32 per point); "
                f"{size // 16} whole points and {size % 16} stray bytes"
            )
        return size // 16

    def read_scan(self, frame: int, mmap: bool = False) -> np.ndarray:
        """Points of a frame as an (N, 4) float32 array of x, y, z, intensity (metres, LiDAR frame).

        ``mmap=True`` returns a read-only memory map instead of loading the file, for callers that
        touch only part of many scans.
        """
        n = self.num_points(frame)
        path = self.scan_path(frame)
        if mmap and n:
            data = np.memmap(path, dtype="<f4", mode="r", shape=(n, 4))
        else:
            data = np.fromfile(path, dtype="<f4").reshape(n, 4)
        # On little-endian hosts (all ROS targets) this is a no-op; elsewhere it converts once.
        return data.astype(np.float32, copy=False)

    def _labels(self) -> dict[int, Path]:
        if self._label_paths is None:
            self._label_paths = (
                self._list_frames(self.labels_dir, ".label") if self.labels_dir.is_dir() else {}
            )
        return self._label_paths

    @property
    def has_labels(self) -> bool:
        """True when every frame has a ``.label`` file (and there is at least one frame)."""
        labels = self._labels()
        return bool(self.frames) and all(frame in labels for frame in self.frames)

    def read_raw_labels(self, frame: int) -> np.ndarray | None:
        """Packed uint32 labels of a frame, or None when it has no ``.label`` file."""
        path = self.label_path(frame)
        if not path.is_file():
            return None
        size = path.stat().st_size
        if size % 4:
            raise LabelLengthError(f"{path}: {size} bytes is not a multiple of 4 (one uint32 per point)")
        n_points = self.num_points(frame)
        if size // 4 != n_points:
            raise LabelLengthError(
                f"{path} has {size // 4} labels but its scan {self.scan_path(frame)} has {n_points} points"
            )
        return np.fromfile(path, dtype="<u4").astype(np.uint32, copy=False)

    def read_labels(self, frame: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(semantic, instance) uint16 arrays of a frame, or None when it has no ``.label`` file."""
        raw = self.read_raw_labels(frame)
        return None if raw is None else unpack_labels(raw)

    # ---- calibration, poses, times ---------------------------------------------------------------

    @property
    def calib(self) -> dict[str, np.ndarray]:
        """Every ``KEY: numbers`` entry of ``calib.txt`` as 1-D float64 arrays, in file order."""
        if self._calib is None:
            path = self.directory / "calib.txt"
            calib: dict[str, np.ndarray] = {}
            for line_no, line in enumerate(_read_text_lines(path, "calibration file"), start=1):
                if not line.strip():
                    continue
                key, sep, rest = line.partition(":")
                if not sep:
                    raise MalformedFileError(f"{path} line {line_no}: expected 'KEY: numbers'")
                key = key.strip()
                if key in calib:
                    raise MalformedFileError(f"{path} line {line_no}: {key!r} appears twice")
                calib[key] = np.array(_parse_numbers(rest, path, line_no, MalformedFileError))
            self._calib = calib
        return dict(self._calib)

    @property
    def velo_to_cam(self) -> np.ndarray:
        """Tr from ``calib.txt`` as a 4x4 float64 matrix (velodyne -> camera 0)."""
        path = self.directory / "calib.txt"
        values = self.calib.get("Tr")
        if values is None:
            raise MissingCalibError(f"{path}: no 'Tr:' (velodyne to camera) entry")
        if values.size != 12:
            raise MissingCalibError(f"{path}: 'Tr:' has {values.size} numbers, expected 12")
        tr = np.vstack([values.reshape(3, 4), [0.0, 0.0, 0.0, 1.0]])
        if not np.all(np.isfinite(tr)) or abs(np.linalg.det(tr)) < 1e-9:
            raise MissingCalibError(f"{path}: 'Tr:' is not an invertible transform")
        return tr

    def _camera_poses_file(self) -> np.ndarray:
        if self._camera_poses_all is None:
            path = self.directory / "poses.txt"
            rows = []
            for line_no, line in enumerate(_read_text_lines(path, "poses file"), start=1):
                numbers = _parse_numbers(line, path, line_no, MissingPoseError)
                if len(numbers) != 12:
                    raise MissingPoseError(
                        f"{path} line {line_no} (frame {line_no - 1}) has {len(numbers)} numbers, expected 12"
                    )
                rows.append(numbers)
            self._camera_poses_all = _as_pose_stack(np.array(rows, dtype=np.float64).reshape(-1, 12), "poses")
        return self._camera_poses_all

    def _check_rows(self, n_rows: int, path: Path, what: str, error: type) -> None:
        if self.frames and self.frames[-1] >= n_rows:
            missing = [f for f in self.frames if f >= n_rows]
            raise error(
                f"{path} has {n_rows} {what} rows but the sequence has {len(self.frames)} scans up to "
                f"frame {self.frames[-1]}; no row for frame(s) {missing[:5]}"
                + (" ..." if len(missing) > 5 else "")
            )

    @property
    def camera_poses(self) -> np.ndarray:
        """Camera-0 poses exactly as in ``poses.txt``, (len(frames), 4, 4) float64."""
        cams = self._camera_poses_file()
        self._check_rows(len(cams), self.directory / "poses.txt", "pose", MissingPoseError)
        return cams[list(self.frames)]

    @property
    def poses(self) -> np.ndarray:
        """LiDAR poses ``P'_i = Tr^-1 . P_0^-1 . P_i . Tr``, (len(frames), 4, 4) float64.

        ``P_0`` is the first row of ``poses.txt`` (frame 0), so frame 0's pose is the identity and
        ``poses[k]`` maps points of scan ``frames[k]`` into the LiDAR frame of scan 0.
        """
        cams = self._camera_poses_file()
        self._check_rows(len(cams), self.directory / "poses.txt", "pose", MissingPoseError)
        if self._lidar_poses_all is None:
            self._lidar_poses_all = lidar_poses_from_camera(cams, self.velo_to_cam)
        return self._lidar_poses_all[list(self.frames)]

    def pose(self, frame: int) -> np.ndarray:
        """LiDAR pose (4x4) of one frame; see :attr:`poses`."""
        return self.poses[self._index(frame)]

    @property
    def times(self) -> np.ndarray:
        """Timestamps in seconds from ``times.txt``, aligned with :attr:`frames`, float64."""
        if self._times_all is None:
            path = self.directory / "times.txt"
            values = []
            for line_no, line in enumerate(_read_text_lines(path, "times file"), start=1):
                numbers = _parse_numbers(line, path, line_no, MalformedFileError)
                if len(numbers) != 1:
                    raise MalformedFileError(f"{path} line {line_no} has {len(numbers)} numbers, expected 1")
                values.append(numbers[0])
            self._times_all = np.array(values, dtype=np.float64)
        self._check_rows(len(self._times_all), self.directory / "times.txt", "time", MalformedFileError)
        return self._times_all[list(self.frames)]

    def time(self, frame: int) -> float:
        """Timestamp (s) of one frame."""
        return float(self.times[self._index(frame)])

    def _index(self, frame: int) -> int:
        self.scan_path(frame)  # raises MissingFileError for an unknown frame
        return self.frames.index(int(frame))

    @property
    def sensor(self) -> SensorInfo | None:
        """The sensor and its mounting from ``sensor.yaml``, None when the file is absent."""
        path = self.directory / SENSOR_FILE
        if not path.is_file():
            return None
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            return SensorInfo(
                name=str(data["name"]),
                height_m=float(data["mounting_height_m"]),
                roll_deg=float(data.get("mounting_roll_deg", 0.0)),
                pitch_deg=float(data.get("mounting_pitch_deg", 0.0)),
                rate_hz=float(data.get("rate_hz", 10.0)),
            )
        except (yaml.YAMLError, TypeError, KeyError, ValueError, AttributeError) as error:
            raise MalformedFileError(f"{path}: not a sensor description ({error!r})") from None


SENSOR_FILE = "sensor.yaml"


@dataclass(frozen=True)
class SensorInfo:
    """What ``sensor.yaml`` says of the sensor that recorded a sequence."""

    name: str
    height_m: float  # sensor origin above the ground
    roll_deg: float
    pitch_deg: float
    rate_hz: float


def open_sequence(root: PathLike, sequence: str | int) -> SemanticKittiSequence:
    """Open ``ROOT/sequences/NN`` for reading, e.g. ``open_sequence(root, "08")``."""
    return SemanticKittiSequence(sequence_path(root, sequence))


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


class SemanticKittiWriter:
    """Creates a sequence directory in the SemanticKITTI layout.

    ``velo_to_cam`` is the Tr written to ``calib.txt`` and used to turn LiDAR poses into the camera
    poses that ``poses.txt`` holds; None means the identity (simulated data has no camera). Output is
    byte-deterministic: the same calls with the same data give identical files.
    """

    def __init__(self, directory: PathLike, velo_to_cam: npt.ArrayLike | None = None) -> None:
        self.directory = Path(directory)
        self.velo_to_cam = np.eye(4) if velo_to_cam is None else _as_transform(velo_to_cam, "Tr")
        if abs(np.linalg.det(self.velo_to_cam)) < 1e-9:
            raise InvalidDataError("Tr (velo_to_cam) is not invertible")
        self.velodyne_dir = self.directory / "velodyne"
        self.labels_dir = self.directory / "labels"
        self.velodyne_dir.mkdir(parents=True, exist_ok=True)
        # labels/ is created only on the first write_labels, so an unlabelled sequence reads back
        # with has_labels == False.

    def scan_path(self, frame: int) -> Path:
        return self.velodyne_dir / f"{_frame_stem(self._frame(frame))}.bin"

    def label_path(self, frame: int) -> Path:
        return self.labels_dir / f"{_frame_stem(self._frame(frame))}.label"

    @staticmethod
    def _frame(frame: int) -> int:
        if int(frame) != frame or frame < 0:
            raise InvalidDataError(f"frame id must be a non-negative integer, got {frame!r}")
        return int(frame)

    def write_scan(self, frame: int, points: npt.ArrayLike) -> Path:
        """Write an (N, 4) array of x, y, z, intensity as little-endian float32."""
        array = np.asarray(points)
        if array.ndim != 2 or array.shape[1] != 4:
            raise InvalidDataError(f"scan {frame}: points must have shape (N, 4), got {array.shape}")
        if array.dtype.kind not in "fiu":
            raise InvalidDataError(f"scan {frame}: points must be numeric, got dtype {array.dtype}")
        data = np.ascontiguousarray(array, dtype="<f4")
        if not np.all(np.isfinite(data)):
            raise InvalidDataError(f"scan {frame}: points contain non-finite values (after float32)")
        path = self.scan_path(frame)
        path.write_bytes(data.tobytes())
        return path

    def write_labels(
        self, frame: int, semantic: npt.ArrayLike, instance: npt.ArrayLike | None = None
    ) -> Path:
        """Write per-point semantic (and instance, default 0) ids packed into uint32.

        If the frame's scan is already written, the label count must match its point count.
        """
        packed = pack_labels(semantic, instance)
        scan = self.scan_path(frame)
        path = self.label_path(frame)
        if scan.is_file():
            n_points = scan.stat().st_size // 16
            if n_points != packed.size:
                raise LabelLengthError(
                    f"{path}: {packed.size} labels given but scan {scan} has {n_points} points"
                )
        self.labels_dir.mkdir(parents=True, exist_ok=True)
        path.write_bytes(np.ascontiguousarray(packed, dtype="<u4").tobytes())
        return path

    def write_poses(self, lidar_poses: npt.ArrayLike) -> Path:
        """Write ``poses.txt`` from LiDAR poses (row i = frame i), converted with this writer's Tr.

        Read back, the poses come out as ``L_0^-1 . L_i`` (equal to the input if ``L_0`` is the
        identity) to within the 13 significant digits printed.
        """
        return self.write_camera_poses(camera_poses_from_lidar(lidar_poses, self.velo_to_cam))

    def write_camera_poses(self, camera_poses: npt.ArrayLike) -> Path:
        """Write ``poses.txt`` from camera-0 poses as KITTI stores them (row i = frame i)."""
        cams = _as_pose_stack(camera_poses, "camera poses")
        path = self.directory / "poses.txt"
        path.write_bytes("".join(_format_row(c[:3].ravel()) + "\n" for c in cams).encode("ascii"))
        return path

    def write_calib(self, projections: Mapping[str, npt.ArrayLike] | None = None) -> Path:
        """Write ``calib.txt``: P0..P3 (3x4 camera projections) then ``Tr`` (this writer's velo_to_cam).

        Projections not given default to ``[I | 0]``: nothing in kdmos_ros projects into cameras,
        but the SemanticKITTI tools expect the four lines to be there.
        """
        projections = dict(projections or {})
        default = np.hstack([np.eye(3), np.zeros((3, 1))])
        lines = []
        for key in ("P0", "P1", "P2", "P3"):
            matrix = np.asarray(projections.pop(key, default), dtype=np.float64)
            if matrix.size != 12:
                raise InvalidDataError(f"calib {key} must hold 12 numbers (3x4), got {matrix.size}")
            lines.append(f"{key}: {_format_row(matrix.ravel())}")
        if projections:
            raise InvalidDataError(f"unknown calib entries {sorted(projections)}; expected P0..P3")
        lines.append(f"Tr: {_format_row(self.velo_to_cam[:3].ravel())}")
        path = self.directory / "calib.txt"
        path.write_bytes(("\n".join(lines) + "\n").encode("ascii"))
        return path

    def write_times(self, times: Sequence[float]) -> Path:
        """Write ``times.txt``: one timestamp in seconds per frame (row i = frame i)."""
        values = np.asarray(times, dtype=np.float64)
        if values.ndim != 1 or not np.all(np.isfinite(values)):
            raise InvalidDataError(f"times must be a 1-D array of finite seconds, got shape {values.shape}")
        path = self.directory / "times.txt"
        path.write_bytes("".join(_FLOAT_FORMAT % v + "\n" for v in values).encode("ascii"))
        return path


def create_sequence(
    root: PathLike, sequence: str | int, velo_to_cam: npt.ArrayLike | None = None
) -> SemanticKittiWriter:
    """Writer for ``ROOT/sequences/NN`` (created if needed)."""
    return SemanticKittiWriter(sequence_path(root, sequence), velo_to_cam)
