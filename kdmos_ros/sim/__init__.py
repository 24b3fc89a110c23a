"""Synthetic LiDAR sequences with per-point ground truth, in the SemanticKITTI layout.

SemanticKITTI cannot be downloaded everywhere, so kdmos_ros simulates labelled, posed, consecutive
scans: a procedural town (:mod:`.layout`, :mod:`.scene`, :mod:`.shapes`), traffic moving through it
(:mod:`.routes`, :mod:`.traffic`), a spinning LiDAR described by a YAML preset (:mod:`.sensors`)
ray-cast into it (:mod:`.raycast`), put together and written by :mod:`.simulate`. ``kdmos simulate``
is the command-line entry point.
"""
