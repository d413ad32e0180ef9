"""Models in: trained models converted to ONNX inside a Triton model repository, checked for parity."""
