"""Advice a run gives once: a model configured for one job while used for the other."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

_WARNED: set[str] = set()  # models `warn_if_realtime_config` has warned about in this process
BULK_MAX_BATCH_SIZE = 65_536  # what `export --profile bulk` writes for rows of features


def warn_if_realtime_config(client, model: str, version: str = "") -> bool:
    """Warns once per model when its config looks made for real time (onnxruntime, several instances of one
    thread each, max_batch_size below the bulk profile's), and says how to get a bulk one; True if it warned."""
    if model in _WARNED:
        return False
    try:
        config = client.model_config(model, version)
    except Exception:  # noqa: BLE001 - the config API may be closed: no warning, the run goes on
        return False
    threads = config.get("parameters", {}).get("intra_op_thread_count", {}).get("string_value")
    max_batch = int(config.get("max_batch_size", 0) or 0)
    instances = sum(int(g.get("count", 1)) for g in config.get("instance_group", [])) or 1
    realtime = threads == "1" and instances > 1 and 0 < max_batch < BULK_MAX_BATCH_SIZE
    if config.get("backend") != "onnxruntime" or not realtime or model.endswith("_bulk"):
        return False  # NAME_bulk is what `tune --profile bulk` chose, whatever it looks like
    _WARNED.add(model)
    logger.warning(
        "model `%s` looks configured for real time (max_batch_size %d, %d instance(s) x 1 onnxruntime thread): "
        "bulk scoring is faster with a bulk config. `tritonkit tune --model %s -r REPOSITORY --profile bulk` "
        "measures one and writes it as `%s_bulk` (then score --model %s_bulk), or re-export with --profile bulk",
        model, max_batch, instances, model, model, model,
    )  # fmt: skip
    return True
