"""Data formats kdmos_ros reads and writes: PointCloud2 messages, SemanticKITTI sequences, bags."""
