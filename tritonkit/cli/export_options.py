"""The options every `tritonkit export` source shares, declared once and built into one `ExportOptions`."""

from __future__ import annotations

from pathlib import Path

import typer

from tritonkit.cli.options import OptionGroup, option_group
from tritonkit.export.options import (
    DEFAULT_MAX_QUEUE_DELAY_US,
    TABULAR_MAX_BATCH_SIZE,
    TENSOR_MAX_BATCH_SIZE,
    TENSORRT_HELP,
    ExportOptions,
)

PROFILE_HELP = (
    "realtime or bulk: the starting config for the job (instances, onnxruntime threads, max_batch_size; "
    "rules in export/profiles.py). Explicit --instances/--intra-op-threads/--max-batch-size win. "
    "`tritonkit tune` measures the best one."
)
_PROFILE = typer.Option("realtime", "--profile", envvar="TRITONKIT_EXPORT_PROFILE", help=PROFILE_HELP)

# In the order `--help` lists them, after each source's own options.
_SHARED = [
    (
        "repository",
        Path,
        typer.Option(
            Path("model_repository"),
            "--repository",
            "-r",
            envvar="TRITONKIT_MODEL_REPOSITORY",
            help="Triton model repository folder.",
        ),
    ),
    ("name", str, typer.Option(..., "--name", "-n", help="Model name (its folder in the repository).")),
    ("version", int | None, typer.Option(None, help="Pin a version number (default: one above the highest).")),
    ("replace", bool, typer.Option(False, help="Overwrite the pinned --version when it exists.")),
    ("format", str, typer.Option("onnx", "--format", envvar="TRITONKIT_EXPORT_FORMAT", help=TENSORRT_HELP)),
    (
        "fp16",
        bool,
        typer.Option(
            False,
            "--fp16",
            envvar="TRITONKIT_EXPORT_FP16",
            help="FP16 graph and tensors (for GPU deployments); parity is checked looser.",
        ),
    ),
    (
        "opset",
        int | None,
        typer.Option(None, envvar="TRITONKIT_EXPORT_OPSET", help="ONNX opset (default per source)."),
    ),
    (
        "max_batch_size",
        int | None,
        typer.Option(
            None,
            envvar="TRITONKIT_EXPORT_MAX_BATCH_SIZE",
            help=f"Largest batch Triton forms (default {TABULAR_MAX_BATCH_SIZE} for rows of features, "
            f"{TENSOR_MAX_BATCH_SIZE} otherwise).",
        ),
    ),
    (
        "dynamic_batching",
        bool,
        typer.Option(
            True,
            "--dynamic-batching/--no-dynamic-batching",
            envvar="TRITONKIT_EXPORT_DYNAMIC_BATCHING",
            help="Let Triton merge concurrent requests into batches.",
        ),
    ),
    (
        "max_queue_delay_us",
        int,
        typer.Option(
            DEFAULT_MAX_QUEUE_DELAY_US,
            envvar="TRITONKIT_EXPORT_MAX_QUEUE_DELAY_US",
            help="How long a request may wait for others to batch with.",
        ),
    ),
    (
        "preferred_batch_size",
        list[int] | None,
        typer.Option(
            None,
            "--preferred-batch-size",
            envvar="TRITONKIT_EXPORT_PREFERRED_BATCH_SIZE",
            help="Batch sizes the batcher aims for (repeat the option).",
        ),
    ),
    (
        "max_queue_size",
        int,
        typer.Option(
            0,
            envvar="TRITONKIT_EXPORT_MAX_QUEUE_SIZE",
            help="Most requests waiting in the batcher's queue; more are refused at once as overloaded "
            "(UNAVAILABLE, 'Exceeds maximum queue size'). 0: unbounded.",
        ),
    ),
    (
        "queue_timeout_us",
        int,
        typer.Option(
            0,
            envvar="TRITONKIT_EXPORT_QUEUE_TIMEOUT_US",
            help="Longest a request may wait in the queue before --timeout-action applies. 0: no limit.",
        ),
    ),
    (
        "timeout_action",
        str,
        typer.Option(
            "reject",
            envvar="TRITONKIT_EXPORT_TIMEOUT_ACTION",
            help="reject (answer UNAVAILABLE at once) or delay (serve it after the others) a request that waited "
            "past --queue-timeout-us.",
        ),
    ),
    (
        "instances",
        int | None,
        typer.Option(None, envvar="TRITONKIT_EXPORT_INSTANCES", help="Model instances (default 2 on CPU, 1 on GPU)."),
    ),
    (
        "kind",
        str | None,
        typer.Option(
            None, envvar="TRITONKIT_EXPORT_KIND", help="KIND_CPU or KIND_GPU (default KIND_CPU; tensorrt: KIND_GPU)."
        ),
    ),
    (
        "intra_op_threads",
        int | None,
        typer.Option(
            None,
            envvar="TRITONKIT_EXPORT_INTRA_OP_THREADS",
            help="ONNX Runtime or torch threads per instance (0: one per core; default from --profile).",
        ),
    ),
    (
        "warmup_batch_size",
        int,
        typer.Option(
            0,
            envvar="TRITONKIT_EXPORT_WARMUP_BATCH_SIZE",
            help="Warm each instance up with one batch of this size (0: no warmup).",
        ),
    ),
    (
        "response_cache",
        bool,
        typer.Option(
            False,
            "--response-cache/--no-response-cache",
            envvar="TRITONKIT_EXPORT_RESPONSE_CACHE",
            help="Let Triton's response cache answer repeated requests.",
        ),
    ),
    (
        "input_name",
        list[str] | None,
        typer.Option(
            None, "--input-name", help="Rename inputs: OLD=NEW, or one plain name per input in order (repeat)."
        ),
    ),
    (
        "output_name",
        list[str] | None,
        typer.Option(
            None, "--output-name", help="Rename outputs: OLD=NEW, or one plain name per output in order (repeat)."
        ),
    ),
    (
        "atol",
        float | None,
        typer.Option(
            None, envvar="TRITONKIT_EXPORT_ATOL", help="Parity: largest absolute error allowed (default per source)."
        ),
    ),
    (
        "rtol",
        float | None,
        typer.Option(
            None, envvar="TRITONKIT_EXPORT_RTOL", help="Parity: largest relative error allowed (default per source)."
        ),
    ),
    ("profile", str, _PROFILE),
    (
        "sample",
        Path | None,
        typer.Option(
            None, "--sample", help="Also check parity on these rows (CSV or Parquet; .npz with one array per input)."
        ),
    ),
]


def _export_options(values: dict) -> ExportOptions:
    """Build ExportOptions from the shared typer parameters' values."""
    values = dict(values)
    values["preferred_batch_sizes"] = tuple(values.pop("preferred_batch_size") or ())
    values["input_names"] = tuple(values.pop("input_name") or ())
    values["output_names"] = tuple(values.pop("output_name") or ())
    return ExportOptions(**values)


EXPORT_OPTIONS = OptionGroup("options", tuple(_SHARED), _export_options)
export_options = option_group(EXPORT_OPTIONS)
