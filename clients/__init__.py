"""Predictions out: how to reach Triton (Endpoint), real-time calls (TritonClient), bulk scoring, the store."""

from tritonkit.clients.endpoint import Endpoint, RetryPolicy
from tritonkit.clients.metadata import ModelMeta, TensorMeta
from tritonkit.clients.realtime import Prediction, TritonClient

__all__ = ["Endpoint", "ModelMeta", "Prediction", "RetryPolicy", "TensorMeta", "TritonClient"]
