"""What a model repository or a running server holds: `tritonkit models`.

Both sources come down to Triton's model config in its JSON form (the repository's config.pbtxt
parsed, or the server's `/v2/models/NAME/config`), summarised the same way: versions, inputs and
outputs with types and shapes, max_batch_size, dynamic batching and instance groups.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from google.protobuf import json_format

from tritonkit.errors import ConfigError, ServerError, TritonKitError, UsageError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSummary:
    """One model as a repository or a server describes it."""

    name: str
    versions: list[str]
    state: str  # READY, UNAVAILABLE, ... from a server; "on disk" or "invalid" from a repository
    backend: str = ""
    max_batch_size: int = 0
    inputs: list[str] = field(default_factory=list)  # "name FP32 [-1, 5]"
    outputs: list[str] = field(default_factory=list)
    dynamic_batching: str = ""  # "off", or "delay 0 us, preferred [..], queue 64"
    instances: str = ""  # "2 x KIND_CPU"
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def summarise(name: str, config: dict, versions: list[str], state: str, reason: str = "") -> ModelSummary:
    """A summary from Triton's model config in JSON form (field names as in config.pbtxt)."""
    batch = int(config.get("max_batch_size", 0) or 0)

    def tensors(items: list[dict]) -> list[str]:
        lead = [-1] if batch else []
        return [
            f"{t['name']} {t.get('data_type', '').removeprefix('TYPE_')} {lead + [int(d) for d in t.get('dims', [])]}"
            for t in items
        ]

    batching = config.get("dynamic_batching")
    if batching is None:
        dynamic = "off"
    else:
        queue = (batching.get("default_queue_policy") or {}).get("max_queue_size")
        dynamic = f"delay {int(batching.get('max_queue_delay_microseconds', 0))} us"
        if batching.get("preferred_batch_size"):
            dynamic += f", preferred {[int(b) for b in batching['preferred_batch_size']]}"
        dynamic += f", queue {queue}" if queue else ", queue unbounded"
    groups = config.get("instance_group") or []
    instances = ", ".join(f"{int(g.get('count', 1))} x {g.get('kind', 'KIND_AUTO')}" for g in groups)
    return ModelSummary(
        name=name,
        versions=versions,
        state=state,
        backend=config.get("backend") or config.get("platform") or "",
        max_batch_size=batch,
        inputs=tensors(config.get("input", [])),
        outputs=tensors(config.get("output", [])),
        dynamic_batching=dynamic,
        instances=instances or "Triton's default",
        reason=reason,
    )


def from_repository(path: Path) -> list[ModelSummary]:
    """Every model folder of a repository (one with a config.pbtxt), read without a server."""
    from tritonkit import pbtxt
    from tritonkit.export.repository import versions

    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"--repository {path} is not a folder")
    found = []
    for folder in sorted(p for p in path.iterdir() if p.is_dir() and (p / pbtxt.CONFIG_FILENAME).is_file()):
        numbers = [str(v) for v in versions(folder)]
        try:
            _, text = pbtxt.read_text(folder)
            config = json_format.MessageToDict(pbtxt.parse(text), preserving_proto_field_name=True)
        except ConfigError as e:
            found.append(ModelSummary(folder.name, numbers, "invalid", reason=str(e)))
            continue
        found.append(summarise(config.get("name") or folder.name, config, numbers, "on disk"))
    return found


def from_server(endpoint, models: list[str] | None = None) -> list[ModelSummary]:
    """The models a server serves (its repository index; or just `models`, whose configs stay readable when
    the index is behind the admin key)."""
    from tritonkit.clients import TritonClient

    with TritonClient(endpoint) as client:
        if models:
            index = [{"name": m, "state": "", "version": ""} for m in models]
        else:
            try:
                index = client.models()
            except ServerError as e:
                raise UsageError(
                    f"{endpoint.describe()} does not list its models ({e}); name them with --model, or send the "
                    "admin key (--header tritonkit-admin-key=KEY)"
                ) from e
        return [_served(client, entry) for entry in sorted(index, key=lambda m: m["name"])]


def _served(client, entry: dict) -> ModelSummary:
    name = entry["name"]
    try:
        config = client.model_config(name)
        meta = client.metadata(name)
    except TritonKitError as e:
        return ModelSummary(name, [entry.get("version", "")], entry.get("state") or "UNAVAILABLE", reason=str(e))
    return summarise(name, config, list(meta.versions), entry.get("state") or "READY", entry.get("reason", ""))


def print_table(found: list[ModelSummary], source: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"models in {source}")
    for column in ("model", "versions", "state", "backend", "max batch", "inputs", "outputs", "batching", "instances"):
        table.add_column(column)
    for m in found:
        table.add_row(
            m.name,
            ", ".join(m.versions),
            m.state + (f" ({m.reason})" if m.reason else ""),
            m.backend,
            str(m.max_batch_size),
            "\n".join(m.inputs),
            "\n".join(m.outputs),
            m.dynamic_batching,
            m.instances,
        )
    Console(width=200).print(table)
