"""ONNX export of a generator checkpoint and the ONNX Runtime rollout with `dfworld.rollout`'s interface.

`import dfworld.runtime` stays light: onnx and onnxruntime are imported when a graph is exported
or loaded (they come with the `cpu` or `gpu` extra).
"""

from dfworld.runtime.export import ExportError, ensure_export, export_onnx, read_export
from dfworld.runtime.rollout import OnnxDecoder, OnnxGenerator, OrtRollout, load_onnx

__all__ = ["ExportError", "OnnxDecoder", "OnnxGenerator", "OrtRollout", "ensure_export", "export_onnx", "load_onnx", "read_export"]
