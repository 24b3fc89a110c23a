"""The online segmentation core: scan window, features, ONNX runner, MotionSegmenter (no torch, no ROS)."""
