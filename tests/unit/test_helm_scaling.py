"""Autoscaling, disruption budget and alerts of the chart, rendered as a cluster with or without KEDA,
prometheus-adapter and the Prometheus Operator would see them; no cluster, no socket.

PromQL in the PrometheusRule and the ScaledObject is parsed with promql-parser (a port of Prometheus'
own parser), so a syntax error, a wrong metric name or a job-name pattern that misses the Jobs the
chart creates fails here.
"""

from __future__ import annotations

import re
from typing import Any

import promql_parser
import pytest
from helm_render import (
    CLUSTER_APIS,
    FULLNAME,
    NAMESPACE,
    VALUES_SETS,
    load_values,
    notes,
    only,
    render,
    render_error,
)


def selectors(expr: str) -> list[Any]:
    """The vector selectors of a PromQL expression (raises on a syntax error)."""
    found = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def matchers(selector: Any) -> dict[str, tuple[str, str]]:
    return {m.name: (str(m.op).rsplit(".", 1)[-1], m.value) for m in selector.matchers.matchers}


def rules(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for g in only(manifests, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]


def alert(manifests: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (found,) = [r for r in rules(manifests) if r.get("alert") == name]
    return found


QUEUE_TIME_ON = {"enabled": True, "cpu": {"enabled": False}, "queueTime": {"enabled": True}}


# --- defect 5: queue-time autoscaling works as installed -----------------------------------------


def test_keda_scales_deployment_on_recorded_queue_time_when_provider_is_keda() -> None:
    """The ScaledObject queries Prometheus for this release's recorded series (no adapter), as a Value
    target (the query is already an average), and owns the HPA: the chart renders none."""
    manifests = render(load_values("autoscaling-queue-time-keda"))
    assert not [m for m in manifests if m["kind"] == "HorizontalPodAutoscaler"]
    scaled = only(manifests, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 10)
    assert (
        spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600
    )
    prometheus, cpu = spec["triggers"]
    assert prometheus["type"] == "prometheus" and prometheus["metricType"] == "Value"
    assert prometheus["metadata"]["serverAddress"] == "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"
    assert prometheus["metadata"]["threshold"] == "20000"
    assert prometheus["authenticationRef"] == {"name": "prometheus-auth"}
    assert cpu == {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "80"}}
    for trigger in spec["triggers"]:  # KEDA's CRD: metadata is a map of strings
        assert all(isinstance(v, str) for v in trigger["metadata"].values())

    (record,) = [r for r in rules(manifests) if "record" in r]
    (queried,) = selectors(prometheus["metadata"]["query"])
    assert queried.name == record["record"]
    assert matchers(queried) == {
        "namespace": ("Equal", NAMESPACE),
        "tritonkit_release": ("Equal", record["labels"]["tritonkit_release"]),
    }


def test_hpa_reads_adapter_metric_named_after_recorded_series_when_provider_is_prometheus_adapter() -> None:
    """The HPA's Pods metric is the PrometheusRule's recorded series; no ScaledObject, no unread ConfigMap."""
    manifests = render(load_values("autoscaling-queue-time-adapter"))
    assert not [m for m in manifests if m["kind"] in ("ScaledObject", "ConfigMap")]
    hpa = only(manifests, "HorizontalPodAutoscaler")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "25000"}
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    (record,) = [r for r in rules(manifests) if "record" in r]
    assert metric["pods"]["metric"]["name"] == record["record"]
    numerator, denominator = record["expr"].split("\n/\n")
    selector = f'{{namespace="{NAMESPACE}",service="{FULLNAME}"}}[2m]'
    assert f"rate(nv_inference_queue_duration_us{selector})" in numerator
    assert f"rate(nv_inference_request_success{selector})" in denominator
    assert {s.name for s in selectors(record["expr"])} == {
        "nv_inference_queue_duration_us",
        "nv_inference_request_success",
    }


@pytest.mark.parametrize(
    ("values", "api_versions", "expected"),
    [
        (
            {"autoscaling": QUEUE_TIME_ON, "serviceMonitor": {"enabled": True}},
            CLUSTER_APIS,
            "prometheusRule.enabled=true",
        ),
        (
            {"autoscaling": QUEUE_TIME_ON, "prometheusRule": {"enabled": True}},
            CLUSTER_APIS,
            "serviceMonitor.enabled=true",
        ),
        (
            {"autoscaling": QUEUE_TIME_ON, "prometheusRule": {"enabled": True}, "serviceMonitor": {"enabled": True}},
            CLUSTER_APIS,
            "autoscaling.queueTime.keda.serverAddress",
        ),
        (load_values("autoscaling-queue-time-keda"), ("monitoring.coreos.com/v1",), "--api-versions keda.sh/v1alpha1"),
        (
            load_values("autoscaling-queue-time-adapter"),
            ("monitoring.coreos.com/v1", "keda.sh/v1alpha1"),
            "--api-versions custom.metrics.k8s.io/v1beta1",
        ),
    ],
)
def test_render_fails_with_the_fix_when_queue_time_pipeline_is_incomplete(
    values: dict[str, Any], api_versions: tuple[str, ...], expected: str
) -> None:
    """Scraping, the recording rule, and KEDA or prometheus-adapter: each missing piece is named with the fix."""
    assert expected in render_error(values, api_versions=api_versions)


def test_queue_time_accepts_own_scrape_when_series_selector_is_set() -> None:
    """Without a ServiceMonitor, a seriesSelector says how the operator's own scrape labels Triton's series."""
    values = load_values("autoscaling-queue-time-adapter")
    values["serviceMonitor"] = {"enabled": False}
    values["prometheusRule"]["seriesSelector"] = 'kubernetes_namespace="ml",app="triton"'
    (record,) = [r for r in rules(render(values)) if "record" in r]
    for selector in selectors(record["expr"]):
        assert matchers(selector)["app"] == ("Equal", "triton")


def test_notes_say_how_to_check_the_scaler_when_queue_time_is_on() -> None:
    assert "kubectl --namespace ml get scaledobject" in notes(load_values("autoscaling-queue-time-keda"))
    assert "custom.metrics.k8s.io/v1beta1" in notes(load_values("autoscaling-queue-time-adapter"))


# --- defect 6: a disruption budget never blocks a drain ------------------------------------------


def test_pdb_lets_one_pod_go_and_evicts_unready_pods_when_defaults() -> None:
    manifests = render({"podDisruptionBudget": {"enabled": True}})
    pdb = only(manifests, "PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == 1 and "minAvailable" not in pdb
    assert pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert pdb["selector"]["matchLabels"] == only(manifests, "Deployment")["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"replicaCount": 1, "podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": ""}}, "all 1 Triton pods"),
        ({"replicaCount": 3, "podDisruptionBudget": {"minAvailable": "100%", "maxUnavailable": ""}}, "all 3 Triton"),
        ({"replicaCount": 3, "podDisruptionBudget": {"minAvailable": "90%", "maxUnavailable": ""}}, "all 3 Triton"),
        ({"podDisruptionBudget": {"maxUnavailable": 0}}, "maxUnavailable 0 lets no Triton pod"),
        ({"podDisruptionBudget": {"maxUnavailable": "0%"}}, "maxUnavailable 0% lets no Triton pod"),
    ],
)
def test_render_fails_with_the_fix_when_pdb_would_block_every_drain(values: dict[str, Any], expected: str) -> None:
    """A budget no eviction can meet (every drain would wait forever) is refused, saying what to set."""
    values["podDisruptionBudget"]["enabled"] = True
    message = render_error(values)
    assert expected in message and "drain would wait forever" in message


def test_render_fails_when_pdb_sets_both_bounds() -> None:
    message = render_error({"podDisruptionBudget": {"enabled": True, "minAvailable": 1}})
    assert "maxUnavailable or minAvailable, not both" in message


def test_render_fails_naming_min_replicas_when_pdb_keeps_every_autoscaled_pod() -> None:
    values = load_values("autoscaling-cpu")
    values["podDisruptionBudget"] = {"enabled": True, "minAvailable": 2, "maxUnavailable": ""}
    message = render_error(values)
    assert "autoscaling.minReplicas" in message and "maxUnavailable: 1" in message


@pytest.mark.parametrize(("replicas", "min_available"), [(2, 1), (3, "50%"), (4, 3)])
def test_pdb_renders_when_min_available_leaves_room_to_evict(replicas: int, min_available: int | str) -> None:
    values = {
        "replicaCount": replicas,
        "podDisruptionBudget": {"enabled": True, "minAvailable": min_available, "maxUnavailable": ""},
    }
    assert only(render(values), "PodDisruptionBudget")["spec"]["minAvailable"] == min_available


# --- alerts --------------------------------------------------------------------------------------


@pytest.mark.parametrize("values_set", [s for s in VALUES_SETS if "prometheusRule" in load_values(s)])
def test_every_rule_expression_parses_as_promql_when_values_are(values_set: str) -> None:
    for rule in rules(render(load_values(values_set))):
        assert selectors(rule["expr"]), rule


def test_triton_alerts_watch_queue_time_and_failures_per_model_when_alerts_are_on() -> None:
    manifests = render(load_values("batch-object-store"))
    queue = alert(manifests, "TritonQueueTimeHigh")
    assert {s.name for s in selectors(queue["expr"])} == {
        "nv_inference_queue_duration_us",
        "nv_inference_request_success",
    }
    assert queue["expr"].rstrip().endswith("> 100000") and queue["for"] == "10m"
    failures = alert(manifests, "TritonInferenceFailureRateHigh")
    assert "nv_inference_request_failure" in {s.name for s in selectors(failures["expr"])}
    assert failures["expr"].rstrip().endswith("> 0.01")
    for found in (queue, failures):
        assert "sum by (namespace, model)" in found["expr"]
        assert found["labels"] == {"severity": "warning", "team": "ml-platform"}


def job_name_pattern(rule: dict[str, Any]) -> re.Pattern:
    """The job_name regex of a kube_job_failed alert (Prometheus anchors label regexes at both ends)."""
    (selector,) = selectors(rule["expr"])
    assert selector.name == "kube_job_failed"
    found = matchers(selector)
    assert found["namespace"] == ("Equal", NAMESPACE) and found["condition"] == ("Equal", "true")
    op, pattern = found["job_name"]
    assert op == "Re"
    return re.compile(f"^(?:{pattern})$")


def test_batch_failed_alert_matches_the_jobs_the_chart_creates_when_batch_is_on() -> None:
    """kube_job_failed for the one-off Job and every CronJob run (<cronjob>-<minutes>), not the freshness
    check's Jobs (they have their own alert)."""
    manifests = render(load_values("everything"))
    pattern = job_name_pattern(alert(manifests, "TritonKitBatchJobFailed"))
    cron = only(manifests, "CronJob", "-score")["metadata"]["name"]
    freshness = only(manifests, "CronJob", "-freshness")["metadata"]["name"]
    assert pattern.match(only(manifests, "Job")["metadata"]["name"])
    assert pattern.match(f"{cron}-28930020")
    assert not pattern.match(f"{freshness}-28930020")
    assert not pattern.match(f"{cron}-manual")


def test_stale_alert_fires_on_failed_freshness_job_when_freshness_is_on() -> None:
    manifests = render(load_values("batch-object-store"))
    rule = alert(manifests, "TritonKitPredictionsStale")
    pattern = job_name_pattern(rule)
    freshness = only(manifests, "CronJob", "-freshness")["metadata"]["name"]
    assert pattern.match(f"{freshness}-28930020")
    assert not pattern.match(f"{only(manifests, 'CronJob', '-score')['metadata']['name']}-28930020")
    assert "30h" in rule["annotations"]["summary"]


def test_only_triton_alerts_when_batch_is_off() -> None:
    manifests = render({"prometheusRule": {"enabled": True}})
    assert [r.get("alert") for r in rules(manifests) if "alert" in r] == [
        "TritonQueueTimeHigh",
        "TritonInferenceFailureRateHigh",
    ]


def test_no_alerts_when_alerts_are_turned_off() -> None:
    manifests = render({"prometheusRule": {"enabled": True, "alerts": {"enabled": False}}})
    assert [r for r in rules(manifests) if "alert" in r] == []
