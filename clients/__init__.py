"""Predictions out: real-time clients (and, later, bulk scoring) built on tritonclient."""

from tritonkit.clients.metadata import ModelMeta, TensorMeta
from tritonkit.clients.realtime import Prediction, TritonClient

__all__ = ["ModelMeta", "Prediction", "TensorMeta", "TritonClient"]
