"""The GPU check: the churn MLP as TorchScript on Triton GPU instances, beside the ONNX churn on CPU instances.

    python -m tritonkit.benchmarks.gpu --out DIR [--seconds 10] [--quick] [--models a,b] [--engines aio,threads,procs]

Trains the churn example once and exports it with `tritonkit export torch --format torchscript`
(backend "pytorch", KIND_GPU when torch sees CUDA, else KIND_CPU) as `churn_pt` (dynamic batching, no
queue delay) with twins `churn_pt_delay` (200 us queue delay), `churn_pt_x2` (two instances) and
`churn_pt_nobatch`; and as ONNX `churn_onnx` on two CPU instances (the onnxruntime backend). Starts
the embedded Triton, checks every model's outputs against the trained module in process (one
256-row request and 64 concurrent single-row requests), compares the client engines of
`closed_loop` on `churn_pt`, then runs 16 concurrent single-row gRPC clients for `--seconds` per model
with the fastest engine. Reports infer/s, p50/p99 latency, the average batch Triton formed and its
queue and compute time per request (from its statistics), beside in-process torch on the same device.

Writes `gpu.json` and `gpu.md` to `--out` after every step, so a run cut short still leaves its
numbers. A server that refuses KIND_GPU instances is retried once with KIND_MODEL (the backend then
picks the GPU itself), and says so in the report.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from tritonkit.benchmarks import closed_loop
from tritonkit.benchmarks.gpu_report import parity_rows, write_report
from tritonkit.errors import ServerStartError
from tritonkit.export.churn import FEATURES, OUTPUTS, synthetic_customers, train
from tritonkit.export.options import ExportOptions
from tritonkit.export.torch_source import export_torch
from tritonkit.model_config import DynamicBatching, InstanceGroup, ModelConfig
from tritonkit.server import EmbeddedServer

logger = logging.getLogger(__name__)

CONCURRENCY = 16
DELAY_US = 200
MODELS = ("churn_pt", "churn_pt_delay", "churn_pt_x2", "churn_pt_nobatch", "churn_onnx", "churn_onnx_nobatch")
QUICK_MODELS = ("churn_pt", "churn_pt_nobatch", "churn_onnx")


@functools.cache
def trained_churn() -> torch.nn.Module:
    """The churn MLP, trained once per process: the export factory (`--model`) of every model here."""
    return train()


def _export(repository: Path, name: str, fmt: str, kind: str, instances: int) -> ModelConfig:
    options = ExportOptions(
        repository, name, format=fmt, kind=kind, instances=instances, output_names=tuple(OUTPUTS), replace=True
    )
    factory = f"{__name__}:trained_churn"
    result = export_torch(options, factory=factory, input_shapes=[f"{f}=1" for f in FEATURES])
    logger.info("exported %s: %s", name, "; ".join(map(str, result.parity)))
    return result.config


def _twin(repository: Path, source: ModelConfig, name: str, **changes) -> ModelConfig:
    """A copy of model `source` under `name` with its config changed: the same TorchScript file."""
    shutil.copytree(repository / source.name, repository / name, dirs_exist_ok=True)
    config = replace(source, name=name, **changes)
    config.write(repository / name / "config.pbtxt")
    return config


def prepare(repository: Path, models: tuple[str, ...], kind: str, skipped: dict) -> dict[str, ModelConfig]:
    """Export the churn models named in `models` (churn_pt* on `kind`, churn_onnx on CPU) into `repository`.

    An ONNX export that fails (the comparison, not the subject) is noted in `skipped` and left out."""
    configs: dict[str, ModelConfig] = {}
    if any(m.startswith("churn_pt") for m in models):
        base = _export(repository, "churn_pt", "torchscript", kind, 1)
        batching = base.dynamic_batching
        twins = {
            "churn_pt_delay": {"dynamic_batching": replace(batching, max_queue_delay_us=DELAY_US)},
            "churn_pt_x2": {"instance_groups": [InstanceGroup(count=2, kind=kind)]},
            "churn_pt_nobatch": {"dynamic_batching": None},
        }
        for name, changes in twins.items():
            if name in models:
                configs[name] = _twin(repository, base, name, **changes)
        if "churn_pt" in models:
            configs["churn_pt"] = base
        else:
            shutil.rmtree(repository / "churn_pt")
    if any(m.startswith("churn_onnx") for m in models):
        try:
            onnx = _export(repository, "churn_onnx", "onnx", "KIND_CPU", 2)
        except Exception as e:  # noqa: BLE001 - torch.onnx raises many types; reported, the check goes on
            skipped["churn_onnx"] = f"ONNX export failed: {type(e).__name__}: {e}"[:500]
            shutil.rmtree(repository / "churn_onnx", ignore_errors=True)
            return {name: configs[name] for name in models if name in configs}
        if "churn_onnx_nobatch" in models:  # the CPU path's dynamic batching on/off, on this machine's cores
            configs["churn_onnx_nobatch"] = _twin(repository, onnx, "churn_onnx_nobatch", dynamic_batching=None)
        if "churn_onnx" in models:
            configs["churn_onnx"] = onnx
        else:
            shutil.rmtree(repository / "churn_onnx")
    return {name: configs[name] for name in models if name in configs}


def as_kind_model(repository: Path, configs: dict[str, ModelConfig]) -> dict[str, ModelConfig]:
    """Rewrite the KIND_GPU configs as KIND_MODEL (the backend then chooses the GPU itself)."""
    changed = {}
    for name, config in configs.items():
        groups = [replace(g, kind="KIND_MODEL") if g.kind == "KIND_GPU" else g for g in config.instance_groups]
        changed[name] = replace(config, instance_groups=groups)
        changed[name].write(repository / name / "config.pbtxt")
    return changed


def check_rows(count: int = 256, seed: int = 11) -> dict[str, np.ndarray]:
    frame = synthetic_customers(count, seed=seed)
    return {f: frame[[f]].to_numpy(np.float32).copy() for f in FEATURES}


def reference(rows: dict[str, np.ndarray], device: str = "cpu") -> dict[str, np.ndarray]:
    """The trained module's outputs on `rows`, in process on `device`."""
    module = trained_churn().to(device)
    with torch.inference_mode():
        outputs = module(*(torch.from_numpy(rows[f]).to(device) for f in FEATURES))
    trained_churn().to("cpu")
    return {name: value.cpu().numpy() for name, value in zip(OUTPUTS, outputs)}


def in_process(device: str, seconds: float) -> dict:
    """In-process torch on `device`: sequential single-row latency and 4096-row batches per second."""
    module = trained_churn().to(device)
    one = [torch.from_numpy(v[:1]).to(device) for v in check_rows(1).values()]
    big = [torch.from_numpy(v).to(device) for v in check_rows(4096, seed=12).values()]
    samples = []
    with torch.inference_mode():
        for _ in range(50):
            module(*one)[0].cpu()
        for _ in range(10):  # the first large batches allocate and pick kernels
            module(*big)[0].cpu()
        deadline = time.perf_counter() + seconds / 2
        while time.perf_counter() < deadline:
            begin = time.perf_counter()
            module(*one)[0].cpu()  # .cpu(): the answer reaches the host, as a served one must
            samples.append((time.perf_counter() - begin) * 1000)
        batches, begin = 0, time.perf_counter()
        while time.perf_counter() - begin < seconds / 2:
            module(*big)[0].cpu()
            batches += 1
        rows_per_s = batches * 4096 / (time.perf_counter() - begin)
    trained_churn().to("cpu")
    values = np.asarray(samples)
    return {
        "device": device,
        "single_row_per_s": len(values) / values.sum() * 1000,
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
        "batch_4096_rows_per_s": rows_per_s,
    }


def served_parity(url: str, model: str, rows: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> dict:
    """`model`'s answers to one request of all rows and to 64 concurrent single-row requests, against `expected`."""
    from concurrent.futures import ThreadPoolExecutor

    import tritonclient.grpc as grpc_sync
    from tritonclient.utils import np_to_triton_dtype

    def infer(client, part: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = []
        for name, array in part.items():
            value = grpc_sync.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            value.set_data_from_numpy(array)
            inputs.append(value)
        result = client.infer(model, inputs)
        return {name: result.as_numpy(name) for name in OUTPUTS}

    with grpc_sync.InferenceServerClient(url) as client:
        whole = infer(client, rows)
        with ThreadPoolExecutor(16) as pool:
            singles = list(pool.map(lambda i: infer(client, {k: v[i : i + 1] for k, v in rows.items()}), range(64)))
    single = {name: np.concatenate([s[name] for s in singles]) for name in OUTPUTS}
    head = {name: value[:64] for name, value in expected.items()}
    return {"batch_256": parity_rows(whole, expected), "single_64": parity_rows(single, head)}


def statistics(url: str, model: str) -> dict:
    """Triton's cumulative counters for `model`: executions, inferences, and queue / compute nanoseconds."""
    import tritonclient.grpc as grpc_sync

    with grpc_sync.InferenceServerClient(url) as client:
        stats = client.get_inference_statistics(model).model_stats[0]
    s = stats.inference_stats
    return {
        "executions": stats.execution_count,
        "inferences": stats.inference_count,
        "success": s.success.count,
        "queue_ns": s.queue.ns,
        "compute_ns": s.compute_input.ns + s.compute_infer.ns + s.compute_output.ns,
    }


def measure(url: str, model: str, engine: str, seconds: float, rows: list[dict]) -> dict:
    """One closed-loop run with Triton's counters over it: average batch, queue and compute per request."""
    before = statistics(url, model)
    result = closed_loop.run(engine, url, model, rows, concurrency=CONCURRENCY, seconds=seconds)
    after = statistics(url, model)
    delta = {key: after[key] - before[key] for key in after}
    per_request = max(1, delta["success"])
    return {
        **result.as_dict(),
        "avg_batch": delta["inferences"] / delta["executions"] if delta["executions"] else None,
        "queue_us": delta["queue_ns"] / per_request / 1000,
        "compute_us": delta["compute_ns"] / per_request / 1000,
        "triton": delta,
    }


def environment() -> dict:
    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cuda": cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
    }


def _start(repository: Path, log: Path, report: dict, configs: dict, kind: str) -> tuple[EmbeddedServer, dict]:
    """Start Triton; a refused KIND_GPU model makes one retry with KIND_MODEL instances."""
    try:
        return EmbeddedServer(repository, http_port=0, grpc_port=0, metrics_port=0, log_file=log).start(), configs
    except ServerStartError as e:
        if kind != "KIND_GPU":
            raise
        report["kind_gpu_refused"] = str(e)
        logger.warning("KIND_GPU refused (%s); retrying with KIND_MODEL", e)
        configs = as_kind_model(repository, configs)
        return EmbeddedServer(repository, http_port=0, grpc_port=0, metrics_port=0, log_file=log).start(), configs


def _serve(args, repository: Path, report: dict, configs: dict, kind: str) -> None:
    rows = check_rows()
    expected = reference(rows)
    load_rows = [{k: v[i : i + 1] for k, v in check_rows(512, seed=13).items()} for i in range(512)]
    server, configs = _start(repository, args.out / "triton.log", report, configs, kind)
    report["models"] = {name: {"config": describe(config)} for name, config in configs.items()}
    try:
        url = server.grpc_url
        for name in configs:
            try:
                report["models"][name]["parity"] = served_parity(url, name, rows, expected)
            except Exception as e:  # noqa: BLE001 - a wrong answer is the finding; the load still runs
                report["models"][name]["parity"] = {"error": f"{type(e).__name__}: {e}"[:500]}
            write_report(args.out, report)
        first = next(iter(configs))
        for engine in args.engines:
            report["engines"][engine] = measure(url, first, engine, args.seconds, load_rows)
            write_report(args.out, report)
        best = max(report["engines"], key=lambda e: report["engines"][e]["infer_per_s"])
        report["engine"] = best
        for name in configs:
            report["models"][name]["load"] = measure(url, name, best, args.seconds, load_rows)
            write_report(args.out, report)
    finally:
        server.stop()


def describe(config: ModelConfig) -> dict:
    batching: DynamicBatching | None = config.dynamic_batching
    return {
        "backend": config.backend,
        "instances": ", ".join(f"{g.count} x {g.kind}" for g in config.instance_groups),
        "dynamic_batching": None if batching is None else {"max_queue_delay_us": batching.max_queue_delay_us},
        "max_batch_size": config.max_batch_size,
    }


def run(args) -> dict:
    args.out.mkdir(parents=True, exist_ok=True)
    kind = "KIND_GPU" if torch.cuda.is_available() else "KIND_CPU"
    report = {
        "environment": environment(),
        "kind": kind,
        "seconds": args.seconds,
        "engines": {},
        "models": {},
        "skipped": {},
    }
    write_report(args.out, report)
    started = time.perf_counter()
    report["in_process"] = [in_process("cpu", min(args.seconds, 4))]
    if kind == "KIND_GPU":
        report["in_process"].append(in_process("cuda", min(args.seconds, 4)))
        report["parity_in_process_gpu"] = parity_rows(reference(check_rows(), "cuda"), reference(check_rows()))
    write_report(args.out, report)
    repository = Path(tempfile.mkdtemp(prefix="tritonkit-gpu-"))
    try:
        configs = prepare(repository, tuple(args.models), kind, report["skipped"])
        report["export_s"] = time.perf_counter() - started
        _serve(args, repository, report, configs, kind)
    finally:
        shutil.rmtree(repository, ignore_errors=True)
    report["total_s"] = time.perf_counter() - started
    write_report(args.out, report)
    return report


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu.json, gpu.md and triton.log")
    parser.add_argument("--seconds", type=float, default=None, help="measured seconds per run (default 10, quick 3)")
    parser.add_argument("--quick", action="store_true", help="3 s runs and three models")
    parser.add_argument("--models", default=None, help=f"comma-separated subset of {','.join(MODELS)}")
    parser.add_argument("--engines", default=",".join(closed_loop.ENGINES), help="client engines to compare")
    args = parser.parse_args(argv)
    args.seconds = args.seconds or (3.0 if args.quick else 10.0)
    args.models = args.models.split(",") if args.models else list(QUICK_MODELS if args.quick else MODELS)
    args.engines = args.engines.split(",")
    unknown = sorted(set(args.models) - set(MODELS)) + sorted(set(args.engines) - set(closed_loop.ENGINES))
    if unknown:
        parser.error(f"unknown model or engine: {', '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse(argv)
    report = run(args)
    print((args.out / "gpu.md").read_text())
    return 0 if all(m.get("load", {}).get("requests") for m in report["models"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
