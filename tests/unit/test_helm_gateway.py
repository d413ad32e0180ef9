"""The Helm chart's gateway (`gateway:` values): rendered by Helm's own engine, validated against the
Kubernetes schemas (through the shared values sets, tests/unit/helm_values/gateway.yaml among them), and
its promises asserted: hardening as Triton's, the store URL from a Secret, alerts on what the gateway exports."""

from __future__ import annotations

import yaml
from test_helm_chart import FULLNAME, load_values, only, render, render_error

GATEWAY = f"{FULLNAME}-gateway"


def gateway_manifests(values: dict) -> list[dict]:
    return [m for m in render(values) if m["metadata"]["name"].startswith(GATEWAY)]


def by_kind(manifests: list[dict], kind: str) -> dict:
    return only(manifests, kind)


def container(manifests: list[dict]) -> dict:
    return by_kind(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def test_gateway_absent_when_defaults():
    assert gateway_manifests({}) == []


def test_gateway_renders_each_resource_when_everything_enabled():
    kinds = sorted(m["kind"] for m in gateway_manifests(load_values("gateway")))
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "Pod",
            "PodDisruptionBudget",
            "PrometheusRule",
            "Service",
            "ServiceMonitor",
        ]
    )


def test_gateway_runs_tritonkit_gateway_against_release_triton_with_store_from_secret():
    manifests = gateway_manifests(load_values("gateway"))
    gateway = container(manifests)
    args = gateway["args"]
    assert args[0] == "gateway" and "--host=0.0.0.0" in args and "--workers=2" in args
    assert f"--url={FULLNAME}.ml.svc.cluster.local:8001" in args
    assert "--model=churn" in args and "--model=embeddings" in args and "--max-age=26h" in args
    store = next(e for e in gateway["env"] if e["name"] == "TRITONKIT_STORE")
    assert store["valueFrom"]["secretKeyRef"] == {"name": "tritonkit-redis", "key": "url"}
    assert not any("redis://" in str(a) for a in args)


def test_gateway_mounts_request_features_it_is_told_to_read_when_declared():
    manifests = gateway_manifests(load_values("gateway"))
    declared = yaml.safe_load(by_kind(manifests, "ConfigMap")["data"]["request-features.yaml"])
    assert declared == {
        "churn": {"time_zone": "Europe/Paris", "features": {"hour_of_day": "hour_of_day", "is_weekend": "is_weekend"}}
    }
    gateway = container(manifests)
    assert "--request-features=/etc/tritonkit/request-features.yaml" in gateway["args"]
    assert {"name": "request-features", "mountPath": "/etc/tritonkit", "readOnly": True} in gateway["volumeMounts"]
    plain = container(
        gateway_manifests({"gateway": {"enabled": True, "models": ["m"], "store": {"existingSecret": "s"}}})
    )
    assert not any(a.startswith("--request-features") for a in plain["args"])


def test_gateway_pods_are_hardened_as_triton_pods_when_enabled():
    manifests = render(load_values("gateway"))
    triton = next(m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["name"] == FULLNAME)
    gateway = by_kind(gateway_manifests(load_values("gateway")), "Deployment")
    for pod in (triton["spec"]["template"]["spec"], gateway["spec"]["template"]["spec"]):
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        context = pod["containers"][0]["securityContext"]
        assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
    pod = gateway["spec"]["template"]["spec"]
    assert {"name": "tmp", "mountPath": "/tmp"} in pod["containers"][0]["volumeMounts"]  # settings and metrics
    assert pod["containers"][0]["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_gateway_service_selects_gateway_pods_only_when_enabled():
    manifests = render(load_values("gateway"))
    gateway_pods = by_kind(gateway_manifests(load_values("gateway")), "Deployment")["spec"]["template"]["metadata"][
        "labels"
    ]
    services = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "Service"}
    triton_pods = next(m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["name"] == FULLNAME)
    triton_labels = triton_pods["spec"]["template"]["metadata"]["labels"]
    assert services[GATEWAY]["spec"]["selector"].items() <= gateway_pods.items()
    assert not services[GATEWAY]["spec"]["selector"].items() <= triton_labels.items()
    assert not services[FULLNAME]["spec"]["selector"].items() <= gateway_pods.items()
    monitor = by_kind(gateway_manifests(load_values("gateway")), "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "http" and monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= gateway_pods.items()


def test_gateway_hpa_scales_on_cpu_and_deployment_leaves_replicas_when_autoscaling():
    manifests = gateway_manifests(load_values("gateway"))
    hpa = by_kind(manifests, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == GATEWAY
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert "replicas" not in by_kind(manifests, "Deployment")["spec"]


def test_gateway_alerts_watch_series_the_gateway_exports_when_rule_enabled():
    from tritonkit.clients.gateway.metrics import Metrics

    exported = {
        line.split("{")[0].split(" ")[0]
        for line in Metrics(("churn",)).exposition({"churn": {"finished_at": 1.0}}, True).decode().splitlines()
        if line and not line.startswith("#")
    }
    rule = by_kind(gateway_manifests(load_values("gateway")), "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {
        "TritonkitGatewayHitRatioLow",
        "TritonkitBatchRunStale",
        "TritonkitGatewayLiveErrors",
        "TritonkitBatchRowsRejected",
    }
    assert "< 0.9" in alerts["TritonkitGatewayHitRatioLow"]["expr"]
    assert "> 93600" in alerts["TritonkitBatchRunStale"]["expr"]
    assert "tritonkit_batch_rows_rejected" in alerts["TritonkitBatchRowsRejected"]["expr"]
    for alert in alerts.values():
        used = {w.split("{")[0] for w in alert["expr"].replace("(", " ").split() if w.startswith("tritonkit_")}
        assert used and used <= exported, used - exported
        assert f'service="{GATEWAY}"' in alert["expr"]


def test_gateway_render_fails_naming_key_when_required_setting_missing():
    assert "gateway.models" in render_error({"gateway": {"enabled": True, "store": {"existingSecret": "s"}}})
    assert "gateway.store.existingSecret" in render_error({"gateway": {"enabled": True, "models": ["m"]}})
    message = render_error(
        {
            "gateway": {
                "enabled": True,
                "models": ["m"],
                "store": {"existingSecret": "s"},
                "autoscaling": {"enabled": True},
            }
        }
    )
    assert "gateway.resources.requests.cpu" in message


def test_gateway_values_rejected_naming_key_when_invalid():
    assert "'replicas'" in render_error({"gateway": {"replicas": 2}})
    assert "fallback" in render_error({"gateway": {"fallback": "cache"}})
    assert "minHitRatio" in render_error({"gateway": {"prometheusRule": {"minHitRatio": 2}}})
    bad_kind = {"gateway": {"requestFeatures": {"churn": {"features": {"hour": "hour"}}}}}
    assert "hour" in render_error(bad_kind)
