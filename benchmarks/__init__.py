"""Benchmarks: latency and throughput measured side by side with in-process onnxruntime."""
