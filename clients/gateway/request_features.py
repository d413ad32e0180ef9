"""Request-time features: model inputs that only exist when a request arrives, computed by the gateway.

Declared per model in a small YAML or JSON file next to the gateway's settings (`--request-features`):

    churn_timed:                   # a model the gateway serves
      time_zone: Europe/Paris      # IANA name; the request time is read in this zone
      features:                    # model input -> what it holds
        hour_of_day: hour_of_day   # 0..23
        dow: day_of_week           # 0 = Monday .. 6 = Sunday
        weekend: is_weekend        # 1 on Saturday and Sunday, else 0

Each declaration is checked at start against the model's inputs as Triton reports them: the input must
exist, take numbers, and hold one value per record. A request may still give such an input itself (in a
POST body): the given value wins.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tritonkit.clients.metadata import ModelMeta
from tritonkit.errors import UsageError

KINDS: dict[str, Callable[[datetime], int]] = {
    "hour_of_day": lambda t: t.hour,
    "day_of_week": lambda t: t.weekday(),
    "is_weekend": lambda t: int(t.weekday() >= 5),
    "day_of_month": lambda t: t.day,
    "month": lambda t: t.month,
    "minute_of_hour": lambda t: t.minute,
}
MODEL_KEYS = ("time_zone", "features")
NUMERIC = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64")


@dataclass(frozen=True)
class RequestFeatures:
    """One model's request-time features: input name -> kind, read in `time_zone`."""

    model: str
    time_zone: str
    features: dict[str, str]

    def __post_init__(self):
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise UsageError(
                f"request features of model `{self.model}`: time_zone {self.time_zone!r} is not an IANA time zone "
                "(e.g. UTC, Europe/Paris, America/New_York)"
            ) from None
        for name, kind in self.features.items():
            if kind not in KINDS:
                raise UsageError(
                    f"request feature `{name}` of model `{self.model}` is {kind!r}; expected one of {', '.join(KINDS)}"
                )

    def values(self, now: float | None = None) -> dict[str, int]:
        """The features for a request arriving at `now` (unix seconds; default: this moment)."""
        moment = datetime.fromtimestamp(time.time() if now is None else now, ZoneInfo(self.time_zone))
        return {name: KINDS[kind](moment) for name, kind in self.features.items()}

    def check(self, meta: ModelMeta) -> None:
        """Raises UsageError naming a declared input the model lacks, or one that does not take one number."""
        inputs = {t.name: t for t in meta.inputs}
        for name in self.features:
            tensor = inputs.get(name)
            if tensor is None:
                raise UsageError(
                    f"request feature `{name}` is not an input of model `{meta.name}`; its inputs: {meta.signature()}"
                )
            per_record = tensor.shape[1:] if meta.batching else tensor.shape
            if tensor.datatype not in NUMERIC or tuple(per_record) not in ((), (1,), (-1,)):
                raise UsageError(
                    f"request feature `{name}` feeds input `{name}` of model `{meta.name}`, which takes "
                    f"{tensor.datatype} {list(tensor.shape)}; a request-time feature is one number per record"
                )


def load(path: str | Path | None, models: tuple[str, ...]) -> dict[str, RequestFeatures]:
    """The declarations in `path` (YAML or JSON), by model; UsageError naming what is wrong and where."""
    if path is None:
        return {}
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--request-features {path}: cannot read it ({e})") from None
    document = _parse(path, text)
    if not isinstance(document, dict):
        raise UsageError(f"--request-features {path}: expected a mapping of model names to declarations")
    declared = {}
    for model, spec in document.items():
        if model not in models:
            raise UsageError(
                f"--request-features {path} declares model `{model}`, which the gateway does not serve; "
                f"its models (--model): {', '.join(models)}"
            )
        if not isinstance(spec, dict) or sorted(set(spec) - set(MODEL_KEYS)):
            unknown = sorted(set(spec) - set(MODEL_KEYS)) if isinstance(spec, dict) else []
            raise UsageError(
                f"--request-features {path}, model `{model}`: "
                + (f"unknown key(s) {', '.join(map(str, unknown))}; " if unknown else "expected a mapping; ")
                + f"valid keys: {', '.join(MODEL_KEYS)}"
            )
        features = spec.get("features") or {}
        if not isinstance(features, dict) or not all(isinstance(v, str) for v in features.values()):
            raise UsageError(
                f"--request-features {path}, model `{model}`: features must map input names to one of "
                f"{', '.join(KINDS)}"
            )
        declared[model] = RequestFeatures(model, str(spec.get("time_zone", "UTC")), dict(features))
    return declared


def _parse(path: Path, text: str):
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise UsageError(f"--request-features {path} is not valid JSON: {e}") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UsageError(f"--request-features {path} is not valid YAML: {e}") from None
