"""What one gateway serves and how: one frozen value, checked once, handed to every worker process as JSON."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tritonkit.clients.endpoint import Endpoint, RetryPolicy
from tritonkit.clients.store import check_model_name, parse_store_url
from tritonkit.errors import UsageError

FALLBACKS = ("realtime", "none")
SETTINGS_FILE_ENV = "_TRITONKIT_GATEWAY_SETTINGS_FILE"  # set by `serve` for its worker processes


@dataclass(frozen=True)
class GatewaySettings:
    """One gateway.

    Args:
        models: the Triton models it serves predictions of.
        store: prediction and feature store URL (redis://, rediss:// or sqlite:///).
        endpoint: how to reach Triton for live calls; its `timeout_s` is the default request budget.
        host, port: where it listens.
        workers: worker processes (each with its own store pool and Triton channel).
        request_features: YAML or JSON file declaring request-time features per model (see
            `request_features`); None: none.
        max_age_s: default freshness: entries older than this are stale (None: any unexpired entry is fresh).
        fallback: default for misses and stale entries: "realtime" (score live) or "none".
        write_back: store live answers (source "realtime") and POSTed features.
        stale_on_version: an entry written by an older model version than Triton now serves is stale.
        version_refresh_s: how often each worker re-reads the model metadata (new versions, readiness).
        store_connections: Redis pool size per worker.
        max_batch_ids: most ids in one batchGet.
        write_timeout_s: budget of a background write-back.
    """

    models: tuple[str, ...]
    store: str
    endpoint: Endpoint = field(default_factory=lambda: Endpoint(timeout_s=0.5))
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    request_features: str | None = None
    max_age_s: float | None = None
    fallback: str = "realtime"
    write_back: bool = True
    stale_on_version: bool = True
    version_refresh_s: float = 30.0
    store_connections: int = 64
    max_batch_ids: int = 1000
    write_timeout_s: float = 1.0

    def __post_init__(self):
        models = tuple(dict.fromkeys(self.models))
        if not models:
            raise UsageError("--model is required: name the model(s) the gateway serves (repeatable)")
        for model in models:
            check_model_name(model)
        object.__setattr__(self, "models", models)
        parse_store_url(self.store)  # raises UsageError naming a bad URL
        if self.fallback not in FALLBACKS:
            raise UsageError(f"--fallback is {self.fallback!r}; expected one of {', '.join(FALLBACKS)}")
        if not 0 < self.port < 65536:
            raise UsageError(f"--port is {self.port}; expected 1 to 65535")
        positive = {
            "--workers": self.workers,
            "--version-refresh-s": self.version_refresh_s,
            "--store-connections": self.store_connections,
            "--max-batch-ids": self.max_batch_ids,
            "--write-timeout-ms": self.write_timeout_s,
        }
        for option, value in positive.items():
            if not value > 0:
                raise UsageError(f"{option} is {value!r}; expected a number above 0")
        if self.max_age_s is not None and not self.max_age_s > 0:
            raise UsageError(f"--max-age is {self.max_age_s!r} s; expected a positive duration")
        if self.request_features is not None and not Path(self.request_features).is_file():
            raise UsageError(f"--request-features {self.request_features}: no such file")

    def to_json(self) -> str:
        """Everything, header values included: write it only where the gateway's own user can read it."""
        values = asdict(self)
        values["endpoint"]["headers"] = dict(self.endpoint.headers)
        return json.dumps(values)

    @classmethod
    def from_json(cls, text: str) -> GatewaySettings:
        values = json.loads(text)
        endpoint = values.pop("endpoint")
        retry = endpoint.pop("retry")
        endpoint = Endpoint(**endpoint, retry=RetryPolicy(**retry) if retry else None)
        return cls(**{**values, "models": tuple(values["models"]), "endpoint": endpoint})

    def write(self, path: Path) -> None:
        """Writes the JSON to `path`, readable by the owner only (it may hold header secrets)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self.to_json())

    @classmethod
    def from_environment(cls) -> GatewaySettings:
        """The settings `serve` left for this worker process."""
        path = os.environ.get(SETTINGS_FILE_ENV)
        if not path:
            raise UsageError(f"{SETTINGS_FILE_ENV} is not set: start the gateway with `tritonkit gateway`")
        return cls.from_json(Path(path).read_text())
