"""tritonkit: put trained models behind NVIDIA Triton Inference Server.

Subpackages are the top-level folders of the repository: ``tritonkit.export`` (models in),
``tritonkit.server`` (the embedded Triton), ``tritonkit.clients`` (predictions out) and
``tritonkit.benchmarks``. This package holds what they share: the CLI, the typed model config
and the error root.
"""

__version__ = "0.1.0"
