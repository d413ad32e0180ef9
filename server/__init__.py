"""The embedded Triton Inference Server (no Docker, no GPU) and its Python-based onnxruntime backend."""

from tritonkit.server.embedded import EmbeddedServer, TritonInstall, free_port

__all__ = ["EmbeddedServer", "TritonInstall", "free_port"]
