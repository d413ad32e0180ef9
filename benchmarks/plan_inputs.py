"""Where a plan's measured inputs come from: a bench summary, a gateway's metrics, a prediction store.

- `summary_inputs`: the `summary.json` that `tritonkit bench` writes: offline rows/s (batch capacity), the
  highest server-scenario rate whose p99 meets the budget and that p99 (real-time capacity of one instance),
  and the single-stream p99. Each value names the summary field it came from.
- `gateway_hit_ratio`: hits / all lookups from the counters `tritonkit_gateway_lookups_total{model,status}`
  in Prometheus text (a /metrics URL or a saved file).
- `store_inputs`: the average size of a model's stored entries and the p99 of reading one back.
  SQLite: the entry row's bytes (the text columns and two 8-byte reals; pages and indexes left out).
  Redis: `MEMORY USAGE` of each sampled entry key (Redis' own overhead included, the freshness index not).
- `resolve`: the options of `tritonkit plan` to checked PlanInputs: given options win over measured values,
  which win over defaults; a hit ratio or a size given both by hand and by measurement is refused.

Nothing here imports Locust or matplotlib.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tritonkit.benchmarks.plan_modes import MEASURED, SPECS, PlanInputs, Value
from tritonkit.errors import UsageError

LOOKUPS_METRIC = "tritonkit_gateway_lookups_total"
STORE_SAMPLE = 200
_SAMPLE_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_ESCAPE = re.compile(r"\\(.)")  # label values escape \\, \" and \n


@dataclass
class PlanOptions:
    """What `tritonkit plan` was asked: numbers given by hand (SPECS names) and the sources to measure from."""

    model: str | None = None
    summary: Path | None = None  # a tritonkit bench summary.json
    gateway_metrics: str | None = None  # a gateway's /metrics URL, or a file of Prometheus text
    store: str | None = None  # sqlite:///... or redis://...
    given: dict[str, float | Value] = field(default_factory=dict)


def resolve(options: PlanOptions) -> PlanInputs:
    """Checked inputs: given options, then measured values, then defaults."""
    given = {k: v for k, v in options.given.items() if v is not None}
    measured: dict[str, Value] = {}
    provenance: list[str] = []
    model = options.model
    if options.summary is not None:
        budget = given.get("latency_budget_ms", SPECS["latency_budget_ms"].default)
        model, values, where = summary_inputs(Path(options.summary), model, _number(budget))
        measured.update(values)
        provenance.append(where)
    for name, source, option in (
        ("hit_ratio", options.gateway_metrics, "--gateway-metrics"),
        ("bytes_per_prediction", options.store, "--store"),
    ):
        if source is not None and name in given:
            raise UsageError(f"{name} is given by hand and measured from {option} {source}; give one of them")
    if options.gateway_metrics is not None:
        measured["hit_ratio"] = gateway_hit_ratio(options.gateway_metrics, model)
        provenance.append(f"hit ratio from {options.gateway_metrics}")
    if options.store is not None:
        if not model:
            raise UsageError("--store needs --model (or --from a bench summary): whose entries to measure")
        measured.update(store_inputs(options.store, model))
        provenance.append(f"entry size and read p99 from {_redact(options.store)}")
    return PlanInputs.build(model, tuple(provenance), **{**measured, **given})


def parse_duration_s(text: str, option: str) -> float:
    """Seconds in `text` (90s, 15m, 24h, 2d); 0 means "at request time"."""
    from tritonkit.clients.store import parse_duration

    if str(text).strip() in ("0", "0s", "0m", "0h", "0d"):
        return 0.0
    return parse_duration(text, option)


def _number(value) -> float:
    return value.value if isinstance(value, Value) else float(value)


def _field(data: dict, path: tuple[str, ...], where: Path):
    node = data
    for i, key in enumerate(path):
        if not isinstance(node, dict) or key not in node or node[key] is None:
            raise UsageError(
                f"bench summary {where} has no `{'.'.join(path[: i + 1])}`; expected the summary.json that "
                "`tritonkit bench` writes (with the offline and server scenarios)"
            )
        node = node[key]
    return node


def summary_inputs(path: Path, model: str | None, budget_ms: float) -> tuple[str, dict[str, Value], str]:
    """The summary's model, its capacities as measured Values, and a line saying which run they came from."""
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise UsageError(f"bench summary {path} cannot be read: {e.strerror or e}") from e
    except json.JSONDecodeError as e:
        raise UsageError(f"bench summary {path} is not JSON: {e}") from e
    if not isinstance(data, dict):
        raise UsageError(f"bench summary {path} holds a {type(data).__name__}; expected a JSON object")
    name = _field(data, ("options", "model"), path)
    if model and model != name:
        raise UsageError(f"bench summary {path} measured model `{name}`; --model is `{model}`")
    values = {"batch_rows_per_s": _measured(data, ("offline", name, "rows_per_s"), path)}
    values.update(_server_capacity(data, name, budget_ms, path))
    single = [r for r in data.get("single_stream") or [] if r.get("model") == name and r.get("protocol") == "grpc"]
    if single and single[0].get("p99_ms") is not None:
        values["single_stream_p99_ms"] = Value(
            single[0]["p99_ms"], MEASURED, f"{path.name}: single_stream[{name}, grpc].p99_ms"
        )
    env = data.get("environment") or {}
    where = (
        f"`{data.get('command', 'tritonkit bench')}` on {env.get('machine', '?')}, {env.get('when', '?')}, "
        f"load average {', '.join(str(x) for x in env.get('load_average') or ['?'])}"
    )
    return name, values, where


def _measured(data: dict, path: tuple[str, ...], where: Path) -> Value:
    return Value(_field(data, path, where), MEASURED, f"{where.name}: {'.'.join(path)}")


def _server_capacity(data: dict, name: str, budget_ms: float, where: Path) -> dict[str, Value]:
    """The highest swept rate with p99 within `budget_ms` and no failures; the bench's own answer at its budget."""
    sweep = _field(data, ("server", name), where)
    points = _field(data, ("server", name, "points"), where)
    prefix = f"{where.name}: server.{name}"
    if not points or not isinstance(points, list):
        raise UsageError(f"bench summary {where} has no points in `server.{name}.points`")
    for i, point in enumerate(points):
        for key in ("target_rate", "p99_ms", "failures"):
            if not isinstance(point, dict) or point.get(key) is None:
                raise UsageError(f"bench summary {where} has no `server.{name}.points[{i}].{key}`")
    if sweep.get("budget_ms") == budget_ms and sweep.get("max_rate_within_budget"):
        rate = sweep["max_rate_within_budget"]
        point = next(p for p in points if p["target_rate"] == rate)
        source = f"{prefix}.max_rate_within_budget"
    else:
        within = [p for p in points if p["p99_ms"] <= budget_ms and not p["failures"]]
        point = max(within, key=lambda p: p["target_rate"]) if within else min(points, key=lambda p: p["target_rate"])
        rate = point["target_rate"]
        how = f"p99 within {budget_ms:g} ms" if within else f"lowest rate: none within {budget_ms:g} ms"
        source = f"{prefix}.points[target_rate={rate:g}] ({how})"
    return {
        "realtime_rps_per_instance": Value(rate, MEASURED, source),
        "realtime_p99_ms": Value(point["p99_ms"], MEASURED, f"{prefix}.points[target_rate={rate:g}].p99_ms"),
    }


def _read_text(url_or_file: str) -> str:
    try:
        if re.match(r"^https?://", url_or_file):
            with urllib.request.urlopen(url_or_file, timeout=10) as response:
                return response.read().decode("utf-8", "replace")
        return Path(url_or_file).read_text()
    except OSError as e:
        raise UsageError(f"gateway metrics {url_or_file} cannot be read: {e}") from e


def lookup_counts(text: str) -> dict[tuple[str, str], float]:
    """(model, status) -> count, from the LOOKUPS_METRIC samples of Prometheus text."""
    counts: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        match = _SAMPLE_LINE.match(line.strip())
        if not match or match.group(1) != LOOKUPS_METRIC:
            continue
        labels = {k: _ESCAPE.sub(_unescape, v) for k, v in _LABEL.findall(match.group(2) or "")}
        key = (labels.get("model", ""), labels.get("status", ""))
        counts[key] = counts.get(key, 0.0) + float(match.group(3))
    return counts


def _unescape(match: re.Match) -> str:
    return "\n" if match.group(1) == "n" else match.group(1)


def gateway_hit_ratio(url_or_file: str, model: str | None) -> Value:
    """hits / all lookups of `model` (of the only model counted, when None)."""
    counts = lookup_counts(_read_text(url_or_file))
    if not counts:
        raise UsageError(f"gateway metrics {url_or_file} have no `{LOOKUPS_METRIC}` samples")
    models = sorted({m for m, _ in counts})
    if model is None:
        if len(models) > 1:
            raise UsageError(f"gateway metrics {url_or_file} count lookups of {', '.join(models)}; give --model")
        model = models[0]
    total = sum(n for (m, _), n in counts.items() if m == model)
    if total <= 0:
        raise UsageError(
            f"gateway metrics {url_or_file} count no lookups of model `{model}` (counted: {', '.join(models)})"
        )
    hits = counts.get((model, "hit"), 0.0)
    return Value(hits / total, MEASURED, f"{url_or_file}: {LOOKUPS_METRIC}{{model={model!r}}} hit {hits:g} / {total:g}")


def _redact(url: str) -> str:
    from tritonkit.clients.store import redact

    return redact(url)


def store_inputs(url: str, model: str, sample: int = STORE_SAMPLE) -> dict[str, Value]:
    """The average stored entry size of `model` and the p99 of `get` over up to `sample` of its entries."""
    from tritonkit.clients.store import open_store

    store = open_store(url)
    try:
        if url.startswith("sqlite://"):
            count, size, ids = _sqlite_entries(store.path, model, sample)
        else:
            count, size, ids = _redis_entries(url, model, sample)
        if not count:
            raise UsageError(f"store {_redact(url)} holds no unexpired predictions of model `{model}`")
        store.get(model, ids[0])  # connects: not a read's cost
        times = []
        for entity in ids:
            start = time.perf_counter()
            store.get(model, entity)
            times.append((time.perf_counter() - start) * 1000.0)
    finally:
        store.close()
    times.sort()
    p99 = times[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))]
    where = _redact(url)
    return {
        "bytes_per_prediction": Value(size, MEASURED, f"{where}: average of {count:,} entries of `{model}`"),
        "store_p99_ms": Value(p99, MEASURED, f"{where}: p99 of {len(times)} reads from this machine"),
    }


def _sqlite_entries(path: Path, model: str, sample: int) -> tuple[int, float, list[str]]:
    if not Path(path).is_file():
        raise UsageError(f"store file {path} does not exist")
    now = time.time()
    size = (
        "length(CAST(model AS BLOB)) + length(CAST(entity_id AS BLOB)) + length(CAST(model_version AS BLOB)) "
        "+ length(CAST(outputs AS BLOB)) + length(CAST(source AS BLOB)) + 16"
    )
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            count, average = conn.execute(
                f"SELECT COUNT(*), AVG({size}) FROM predictions WHERE model = ? AND expires_at > ?", (model, now)
            ).fetchone()
            ids = conn.execute(
                "SELECT entity_id FROM predictions WHERE model = ? AND expires_at > ? LIMIT ?", (model, now, sample)
            ).fetchall()
    except sqlite3.Error as e:
        raise UsageError(f"store file {path} cannot be read as a prediction store: {e}") from e
    return count, float(average or 0.0), [row[0] for row in ids]


def _redis_entries(url: str, model: str, sample: int) -> tuple[int, float, list[str]]:
    import redis

    from tritonkit.clients.store_redis import key as _key

    base, _, query = url.partition("?")
    kept = "&".join(p for p in query.split("&") if p and not p.startswith(("batch_ttl=", "realtime_ttl=")))
    client = redis.Redis.from_url(base + ("?" + kept if kept else ""), socket_connect_timeout=2, socket_timeout=2)
    try:
        count = sum(client.zcard(_key(model, "fresh", source)) for source in ("batch", "realtime"))
        keys = []
        for key in client.scan_iter(match=_key(model, "p", "*"), count=1000):
            keys.append(key)
            if len(keys) >= sample:
                break
        sizes = [client.memory_usage(key) or 0 for key in keys]
    except redis.RedisError as e:
        raise UsageError(f"store {_redact(url)} cannot be measured: {e}") from e
    finally:
        client.close()
    prefix = len(_key(model, "p", ""))
    ids = [key.decode()[prefix:] for key in keys]
    return (count if keys else 0), (sum(sizes) / len(sizes) if sizes else 0.0), ids
