"""Rendering helpers shared by the Helm chart tests (tests/unit/test_helm_*.py); no cluster, no socket.

The chart is rendered by Helm's own engine (helm-python-sdk embeds Helm's Go SDK). Its Python `Chart.render`
passes no cluster capabilities, so `render` calls the SDK's native `helm_render` with the same options plus
`kube_version` and `api_versions` (the options `helm template --kube-version --api-versions` sets): the
chart gates features on `.Capabilities`, and the tests render as a cluster of a given version would.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from helm_python import _native

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "helm" / "tritonkit"
VALUES_DIR = Path(__file__).resolve().parent / "helm_values"
RELEASE = "rel"
NAMESPACE = "ml"
FULLNAME = f"{RELEASE}-tritonkit"
# The chart's minimum Kubernetes version (kubeVersion in Chart.yaml).
MIN_KUBE_VERSION = re.fullmatch(
    r">=\s*(\d+\.\d+\.\d+)(-0)?", yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["kubeVersion"]
).group(1)
# The version rendered by default, and the versions whose schemas every values set is validated against:
# the minimum, the default, the first with per-index backoff (beta) and the first with it GA.
KUBE_VERSION = "1.30.0"
SCHEMA_KUBE_VERSIONS = sorted(
    {MIN_KUBE_VERSION, "1.28.0", KUBE_VERSION, "1.33.0"}, key=lambda v: tuple(map(int, v.split(".")))
)
# APIs of a cluster with the Prometheus Operator, KEDA and prometheus-adapter installed (the default here).
CLUSTER_APIS = ("monitoring.coreos.com/v1", "keda.sh/v1alpha1", "custom.metrics.k8s.io/v1beta1")
VALUES_SETS = ["defaults"] + sorted(p.stem for p in VALUES_DIR.glob("*.yaml"))


def load_values(name: str) -> dict[str, Any]:
    """Values of a named set: "defaults" is no override, others are files in helm_values/."""
    if name == "defaults":
        return {}
    return yaml.safe_load((VALUES_DIR / f"{name}.yaml").read_text())


@lru_cache(maxsize=1)
def chart() -> helm.Chart:
    """The chart, loaded once."""
    return helm.Chart.load(CHART_DIR)


def render_raw(
    values: dict[str, Any] | None,
    kube_version: str = KUBE_VERSION,
    api_versions: tuple[str, ...] = CLUSTER_APIS,
    loaded: helm.Chart | None = None,
) -> dict[str, str]:
    """Template path -> rendered text, as `helm template --kube-version --api-versions` would give."""
    options = {"name": RELEASE, "namespace": NAMESPACE, "kube_version": f"v{kube_version}"}
    options["api_versions"] = list(api_versions)
    text = _native.call_string("helm_render", (loaded or chart())._raw(), json.dumps(values or {}), json.dumps(options))
    return json.loads(text)


@lru_cache(maxsize=128)
def _render_cached(values_json: str, kube_version: str, api_versions: tuple[str, ...]):
    manifests: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(render_raw(json.loads(values_json), kube_version, api_versions).items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        manifests.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return tuple(manifests), notes


def render(
    values: dict[str, Any] | None = None,
    kube_version: str = KUBE_VERSION,
    api_versions: tuple[str, ...] = CLUSTER_APIS,
) -> list[dict[str, Any]]:
    """Rendered manifests (parsed YAML, fresh copies) for the given values; NOTES.txt left out."""
    manifests, _ = _render_cached(json.dumps(values or {}, sort_keys=True), kube_version, tuple(api_versions))
    return [json.loads(json.dumps(m)) for m in manifests]


def notes(values: dict[str, Any] | None = None, api_versions: tuple[str, ...] = CLUSTER_APIS) -> str:
    """Rendered NOTES.txt for the given values."""
    return _render_cached(json.dumps(values or {}, sort_keys=True), KUBE_VERSION, tuple(api_versions))[1]


def render_error(
    values: dict[str, Any], kube_version: str = KUBE_VERSION, api_versions: tuple[str, ...] = CLUSTER_APIS
) -> str:
    """The message Helm gives when rendering these values fails; fails the test when it does not."""
    with pytest.raises(helm.HelmError) as caught:
        render_raw(values, kube_version, api_versions)
    return str(caught.value)


def only(manifests: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The single manifest of a kind (and, given, a name suffix), failing when there is not exactly one."""
    found = [m for m in manifests if m["kind"] == kind and (name is None or m["metadata"]["name"].endswith(name))]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[m['metadata']['name'] for m in found]}"
    return found[0]


def triton_container(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """The tritonserver container of the Deployment."""
    return only(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def main_service(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """The ClusterIP Service in front of Triton (not the headless one)."""
    return only(manifests, "Service", FULLNAME)


def pod_specs(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every pod spec the manifests would create, by "<kind>/<name>": Pods, and the templates of
    Deployments, Jobs and CronJobs."""
    specs = {}
    for m in manifests:
        where = f"{m['kind']}/{m['metadata']['name']}"
        if m["kind"] == "Pod":
            specs[where] = m["spec"]
        elif m["kind"] in ("Deployment", "Job"):
            specs[where] = m["spec"]["template"]["spec"]
        elif m["kind"] == "CronJob":
            specs[where] = m["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return specs


def batch_values(**batch: Any) -> dict[str, Any]:
    """The batch values set with some batch.* keys replaced."""
    values = load_values("batch")
    values["batch"].update(batch)
    return values


def score_container(manifests: list[dict[str, Any]], kind: str = "Job") -> dict[str, Any]:
    """The `score` container of the one-off Job (or of the CronJob's job template)."""
    spec = only(manifests, kind, "-score" if kind == "CronJob" else None)["spec"]
    if kind == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]["containers"][0]


def arg_after(args: list[str], flag: str) -> str:
    """The value that follows a flag in a container's args."""
    return args[args.index(flag) + 1]
