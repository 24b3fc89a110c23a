"""Offline training code: models, losses, data, trainer and ONNX export (needs the ``train`` extra: torch).

Nothing outside this package may import it; the runtime (``pipeline/``, ``io/``, ``ros/``, the CLI's
top level) works without torch.
"""
