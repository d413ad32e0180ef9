"""Unit tests of the Helm chart in helm/tritonkit, without a cluster or a socket.

The chart is rendered and linted by Helm's own engine (helm-python-sdk embeds Helm's Go SDK; rendering
helpers in helm_render.py), every rendered manifest is validated against the Kubernetes OpenAPI schemas
that kubernetes-validate ships offline, at the Kubernetes version it was rendered for, and the chart's
promises are asserted under the values sets in tests/unit/helm_values/. Batch jobs, security, scaling
and the Pod Security Standard have their own files beside this one (test_helm_*.py).

ServiceMonitor, PrometheusRule (Prometheus Operator) and ScaledObject (KEDA) are CRDs: kubernetes-validate
has no schema for them, so they are skipped by name in the schema check (CRD_KINDS) and checked field by
field in the tests.
"""

from __future__ import annotations

import json
import re
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from helm_render import (
    CHART_DIR,
    FULLNAME,
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    SCHEMA_KUBE_VERSIONS,
    VALUES_SETS,
    load_values,
    main_service,
    only,
    render,
    render_error,
    triton_container,
)

# Custom resources: no offline schema exists, so they are skipped by the schema check on purpose and
# checked field by field in the tests.
CRD_KINDS = frozenset({"ServiceMonitor", "PrometheusRule", "ScaledObject"})


# --- lint and Kubernetes schemas ---------------------------------------------------------------


@pytest.mark.parametrize("values_set", VALUES_SETS)
def test_chart_lints_clean_when_values_are(values_set: str) -> None:
    """helm lint --strict reports no warning or error."""
    report = helm.lint(CHART_DIR, load_values(values_set), strict=True, kube_version=f"v{KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [] and report["errors"] == []


@pytest.mark.parametrize("kube_version", SCHEMA_KUBE_VERSIONS)
@pytest.mark.parametrize("values_set", VALUES_SETS)
def test_manifests_match_kubernetes_schemas_when_values_are(values_set: str, kube_version: str) -> None:
    """Every manifest rendered for a Kubernetes version validates strictly (unknown fields rejected) against
    that version's schemas, CRD kinds excepted."""
    manifests = render(load_values(values_set), kube_version)
    assert manifests
    for manifest in manifests:
        if manifest["kind"] in CRD_KINDS:
            continue
        where = f"{manifest['kind']}/{manifest['metadata']['name']}"
        try:
            kubernetes_validate.validate(manifest, kube_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{where}: {'.'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            pytest.fail(f"{where}: no schema and not a known CRD kind: {e.message}")


def test_schema_check_rejects_manifest_when_field_is_misspelt() -> None:
    """The schema check can fail: a misspelt container field is caught."""
    deployment = only(render(), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


# --- values validation -------------------------------------------------------------------------


def test_values_rejected_naming_replica_count_when_it_is_a_string() -> None:
    """replicaCount: "two" fails with a message that names the key and the expected type."""
    message = render_error({"replicaCount": "two"})
    assert "replicaCount" in message and "integer" in message


def test_lint_reports_replica_count_when_it_is_a_string() -> None:
    """helm lint turns the same schema failure into an error naming the key."""
    report = helm.lint(CHART_DIR, {"replicaCount": "two"}, strict=True)
    assert any("replicaCount" in e for e in report["errors"])


def test_values_rejected_listing_valid_keys_when_top_level_key_is_unknown() -> None:
    """An unknown top-level key is named, and the valid keys are listed."""
    message = render_error({"replicas": 2})
    assert "'replicas'" in message
    assert "'replicaCount'" in message and "'modelRepository'" in message


def test_values_rejected_naming_key_when_nested_key_is_unknown() -> None:
    """A misspelt key inside a major object (gpu.enable) is named."""
    message = render_error({"gpu": {"enable": True}})
    assert "'enable'" in message and "/gpu" in message


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"modelRepository": {"pvc": {"existingClaim": ""}}}, "existingClaim"),
        ({"modelRepository": {"source": "objectStore"}}, "uri"),
        ({"modelRepository": {"source": "image"}}, "repository"),
        ({"modelRepository": {"source": "image", "image": {"repository": "models"}}}, "tag"),
        ({"modelRepository": {"source": "s3"}}, "source"),
        ({"modelRepository": {"source": "objectStore", "objectStore": {"uri": "bucket/path"}}}, "uri"),
        ({"batch": {"enabled": True, "input": "in", "output": "out"}}, "model"),
        ({"triton": {"modelControlMode": "manual"}}, "modelControlMode"),
        ({"ingress": {"servicePort": 8000}}, "servicePort"),
    ],
)
def test_values_rejected_naming_key_when_required_setting_is_missing_or_invalid(
    values: dict[str, Any], key: str
) -> None:
    """Incomplete or invalid settings fail with a message that names the key."""
    assert key in render_error(values)


def test_render_fails_naming_cpu_request_when_cpu_autoscaling_has_no_request() -> None:
    """CPU autoscaling without resources.requests.cpu is refused (the HPA could not compute utilisation)."""
    message = render_error({"autoscaling": {"enabled": True}})
    assert "resources.requests.cpu" in message


def test_render_fails_when_gpu_is_set_in_resources_by_hand() -> None:
    """nvidia.com/gpu has one source, gpu.count."""
    message = render_error({"resources": {"limits": {"nvidia.com/gpu": 1}}})
    assert "gpu.count" in message


def _describes(schema: dict[str, Any], path: list[str]) -> bool:
    """Whether the schema accepts a key at this path: a declared property, a map entry or an open object."""
    node = schema
    for key in path:
        while "$ref" in node:
            node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
        if key in node.get("properties", {}):
            node = node["properties"][key]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        elif node.get("type") == "object" and "properties" not in node and "additionalProperties" not in node:
            return True
        else:
            return False
    return True


def _value_paths(values: Any, prefix: tuple[str, ...] = ()) -> list[list[str]]:
    if not isinstance(values, dict):
        return []
    paths = []
    for key, sub in values.items():
        paths.append([*prefix, key])
        paths.extend(_value_paths(sub, (*prefix, key)))
    return paths


def test_schema_describes_every_key_when_defaults_are_walked() -> None:
    """Every key path in values.yaml is accepted by a declared part of values.schema.json."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    paths = _value_paths(defaults)
    assert len(paths) > 100
    assert [".".join(p) for p in paths if not _describes(schema, p)] == []
    assert not _describes(schema, ["gpu", "enable"])


def test_schema_property_names_match_properties_when_an_object_lists_its_keys() -> None:
    """Each propertyNames enum (the list shown for an unknown key) equals that object's properties."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    checked = 0

    def walk(node: Any) -> None:
        nonlocal checked
        if isinstance(node, dict):
            if "propertyNames" in node:
                assert sorted(node["propertyNames"]["enum"]) == sorted(node["properties"])
                assert node.get("additionalProperties") is False
                checked += 1
            for sub in node.values():
                walk(sub)
        elif isinstance(node, list):
            for sub in node:
                walk(sub)

    walk(schema)
    assert checked >= 10


def test_values_file_comments_every_key_when_read_line_by_line() -> None:
    """Every key in values.yaml sits right under a comment line."""
    lines = (CHART_DIR / "values.yaml").read_text().splitlines()
    key_line = re.compile(r"^\s*(- )?[A-Za-z_][\w.-]*:")
    uncommented = [
        line.strip()
        for previous, line in zip([""] + lines, lines)
        if key_line.match(line) and not previous.strip().startswith("#")
    ]
    assert uncommented == []


# --- the Triton Deployment ---------------------------------------------------------------------


def test_deployment_runs_pinned_triton_image_with_static_models_when_defaults() -> None:
    """NVIDIA's image at the pinned tag, models loaded once (--model-control-mode=none)."""
    container = triton_container(render())
    assert container["image"] == "nvcr.io/nvidia/tritonserver:25.06-py3"
    assert container["command"] == ["tritonserver"]
    assert "--model-control-mode=none" in container["args"]


def test_deployment_exposes_http_grpc_and_metrics_ports_when_defaults() -> None:
    """Container ports http 8000, grpc 8001, metrics 8002, matching Triton's flags (without the guard sidecar)."""
    container = triton_container(render({"guard": {"enabled": False}}))
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert {"--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"} <= set(container["args"])


def test_deployment_probes_triton_health_endpoints_when_defaults() -> None:
    """Liveness on /v2/health/live, readiness and a long startup window on /v2/health/ready (no guard)."""
    container = triton_container(render({"guard": {"enabled": False}}))
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/v2/health/ready"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


@pytest.mark.parametrize("exit_timeout_s", [30, 600])
def test_deployment_grace_period_covers_exit_timeout_when_exit_timeout_is(exit_timeout_s: int) -> None:
    """terminationGracePeriodSeconds = preStop sleep + --exit-timeout-secs + margin, from one value."""
    manifests = render({"triton": {"exitTimeoutSeconds": exit_timeout_s, "preStopSleepSeconds": 7}})
    pod = only(manifests, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert f"--exit-timeout-secs={exit_timeout_s}" in container["args"]
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "7"]
    assert pod["terminationGracePeriodSeconds"] == 7 + exit_timeout_s + 10


def test_deployment_is_locked_down_with_writable_scratch_when_defaults() -> None:
    """Non-root, read-only root, no escalation, no capabilities; /tmp and a RAM-backed /dev/shm writable."""
    manifests = render({"shm": {"sizeLimit": "2Gi"}})
    pod = only(manifests, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    ctx = container["securityContext"]
    assert ctx["runAsNonRoot"] is True and ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False and ctx["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert volumes[mounts["/dev/shm"]]["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    assert pod["automountServiceAccountToken"] is False


def test_deployment_requests_gpus_on_chosen_products_when_gpu_enabled() -> None:
    """GPU count in requests and limits, product affinity merged into the user's, GPU taint tolerated."""
    pod = only(render(load_values("gpu")), "Deployment")["spec"]["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert resources["limits"] == {"memory": "32Gi", "nvidia.com/gpu": 2}
    assert resources["requests"] == {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": 2}
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [
        {
            "matchExpressions": [
                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["zone-a"]},
                {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]},
            ]
        }
    ]
    assert "podAntiAffinity" in pod["affinity"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert {"key": "dedicated", "operator": "Equal", "value": "inference", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": "p5.48xlarge"}
    assert pod["runtimeClassName"] == "nvidia"
    assert "--allow-gpu-metrics=true" in pod["containers"][0]["args"]


def test_deployment_is_cpu_only_when_gpu_disabled() -> None:
    """No GPU resource, affinity, toleration or runtime class anywhere; GPU metrics off."""
    manifests = render({"gpu": {"products": ["NVIDIA-H100-80GB-HBM3"], "runtimeClassName": "nvidia"}})
    deployment = only(manifests, "Deployment")
    assert "nvidia.com/gpu" not in json.dumps(deployment)
    pod = deployment["spec"]["template"]["spec"]
    assert "runtimeClassName" not in pod and "affinity" not in pod and "tolerations" not in pod
    assert "--allow-gpu-metrics=false" in pod["containers"][0]["args"]


def test_deployment_mounts_claim_read_only_when_repository_is_pvc() -> None:
    """The PVC is mounted read-only at the path given to --model-repository."""
    values = {"modelRepository": {"pvc": {"existingClaim": "churn-models", "subPath": "repo"}, "mountPath": "/repo"}}
    pod = only(render(values), "Deployment")["spec"]["template"]["spec"]
    assert "--model-repository=/repo" in pod["containers"][0]["args"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/repo")
    assert mount["readOnly"] is True and mount["subPath"] == "repo"
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["persistentVolumeClaim"] == {"claimName": "churn-models", "readOnly": True}


def test_deployment_passes_uri_and_secret_env_when_repository_is_s3() -> None:
    """The s3:// URI goes to --model-repository; the Secret's keys become env vars; nothing is mounted."""
    pod = only(render(load_values("repo-s3")), "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "--model-repository=s3://models-bucket/triton/repository" in container["args"]
    assert container["envFrom"] == [{"secretRef": {"name": "triton-s3-credentials"}}]
    assert {v["name"] for v in pod["volumes"]} == {"shm", "tmp"}
    assert "initContainers" not in pod


def test_deployment_mounts_service_account_key_when_repository_is_gcs() -> None:
    """For gs://, only the key file is mounted and GOOGLE_APPLICATION_CREDENTIALS points to it."""
    pod = only(render(load_values("repo-gcs")), "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "--model-repository=gs://models-bucket/triton/repository" in container["args"]
    assert "envFrom" not in container
    env = {e["name"]: e.get("value") for e in container["env"]}
    key_dir = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "gcs-credentials")
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == f"{key_dir}/credentials.json"
    secret = next(v for v in pod["volumes"] if v["name"] == "gcs-credentials")["secret"]
    assert secret == {
        "secretName": "triton-gcs-credentials",
        "items": [{"key": "key.json", "path": "credentials.json"}],
    }


def test_deployment_copies_repository_with_init_container_when_repository_is_image() -> None:
    """An init container copies the image's repository into the emptyDir Triton reads."""
    pod = only(render(load_values("repo-image")), "Deployment")["spec"]["template"]["spec"]
    init = only([{"kind": "init", **c} for c in pod["initContainers"]], "init")
    assert init["image"] == "registry.example.com/churn-model-repository:2024-11-01"
    assert init["command"] == ["cp", "-R", "/models/.", "/model-repository/"]
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    shared = init["volumeMounts"][0]["name"]
    assert next(v for v in pod["volumes"] if v["name"] == shared)["emptyDir"]["sizeLimit"] == "10Gi"
    main_mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == shared)
    assert main_mount == {"name": shared, "mountPath": "/models", "readOnly": True}
    assert "--model-repository=/models" in pod["containers"][0]["args"]


@pytest.mark.parametrize(
    ("triton", "expected", "absent"),
    [
        (
            {"modelControlMode": "explicit", "loadModels": ["churn", "minilm"]},
            ["--model-control-mode=explicit", "--load-model=churn", "--load-model=minilm"],
            "--repository-poll-secs",
        ),
        (
            {"modelControlMode": "poll", "repositoryPollSeconds": 15, "loadModels": ["churn"]},
            ["--model-control-mode=poll", "--repository-poll-secs=15"],
            "--load-model",
        ),
    ],
)
def test_deployment_passes_control_flags_when_control_mode_is_not_none(
    triton: dict[str, Any], expected: list[str], absent: str
) -> None:
    """explicit lists --load-model per model; poll sets the poll interval; neither leaks into the other."""
    args = triton_container(render({"triton": triton}))["args"]
    assert set(expected) <= set(args)
    assert not any(a.startswith(absent) for a in args)


@pytest.mark.parametrize(("values_set", "replicas"), [("defaults", 1), ("autoscaling-cpu", None)])
def test_deployment_replicas_follow_autoscaling_when_values_are(values_set: str, replicas: int | None) -> None:
    """replicas is set without an HPA and left to the HPA with one."""
    assert only(render(load_values(values_set)), "Deployment")["spec"].get("replicas") == replicas


# --- Service and optional resources ------------------------------------------------------------


def test_service_names_ports_for_grpc_aware_proxies_when_defaults() -> None:
    """ClusterIP with http, grpc (appProtocol grpc) and metrics, selecting only the Triton pods."""
    manifests = render(load_values("batch"))
    service = main_service(manifests)
    assert service["spec"]["type"] == "ClusterIP"
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(ports) == {"http", "grpc", "metrics", "guard-metrics"}  # http and guard-metrics: the guard's
    assert ports["grpc"]["appProtocol"] == "grpc" and ports["grpc"]["targetPort"] == "grpc"
    selector = service["spec"]["selector"].items()
    assert selector <= only(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"].items()
    batch_labels = only(manifests, "Job")["spec"]["template"]["metadata"]["labels"].items()
    assert not selector <= batch_labels


def test_optional_resources_absent_when_defaults() -> None:
    """The Deployment, its ClusterIP and headless Services, service account, admin-key Secret and the helm
    test pod; nothing optional."""
    kinds = sorted(m["kind"] for m in render())
    assert kinds == ["Deployment", "Pod", "Secret", "Service", "Service", "ServiceAccount"]


def test_every_optional_resource_rendered_when_everything_enabled() -> None:
    """Each optional feature produces its resource (queue-time scaling through KEDA: a ScaledObject, no HPA)."""
    kinds = sorted(m["kind"] for m in render(load_values("everything")))
    assert kinds == sorted(
        [
            "ConfigMap",
            "CronJob",
            "CronJob",
            "Deployment",
            "Ingress",
            "Job",
            "NetworkPolicy",
            "Pod",
            "Pod",
            "PodDisruptionBudget",
            "PrometheusRule",
            "ScaledObject",
            "Secret",
            "Service",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
        ]
    )


def test_ingress_routes_to_grpc_port_when_service_port_is_grpc() -> None:
    """The Ingress backend is the Service's grpc port, with the host and TLS from values."""
    ingress = only(render(load_values("everything")), "Ingress")
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "triton.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"] == {"name": FULLNAME, "port": {"name": "grpc"}}
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"][0]["secretName"] == "triton-tls"


def test_pdb_limits_unavailable_triton_pods_when_enabled() -> None:
    """The PodDisruptionBudget uses maxUnavailable when given and selects the Triton pods."""
    manifests = render(load_values("autoscaling-cpu"))
    pdb = only(manifests, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == "25%" and "minAvailable" not in pdb["spec"]
    assert pdb["spec"]["selector"]["matchLabels"] == only(manifests, "Deployment")["spec"]["selector"]["matchLabels"]


def test_hpa_scales_deployment_on_cpu_when_cpu_autoscaling_enabled() -> None:
    """One Resource metric on CPU utilisation, bounds from values."""
    hpa = only(render(load_values("autoscaling-cpu")), "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"] == [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}
    ]


def test_servicemonitor_scrapes_metrics_port_of_triton_service_when_enabled() -> None:
    """The ServiceMonitor selects the ClusterIP Service's labels (not the headless Service's) and scrapes its
    metrics port."""
    manifests = render(load_values("autoscaling-queue-time-adapter"))
    monitor = only(manifests, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]
    assert selector["matchLabels"].items() <= main_service(manifests)["metadata"]["labels"].items()
    headless = only(manifests, "Service", "-headless")
    assert selector["matchLabels"].items() <= headless["metadata"]["labels"].items()
    (excluded,) = selector["matchExpressions"]
    assert excluded["operator"] == "DoesNotExist" and excluded["key"] in headless["metadata"]["labels"]
    assert excluded["key"] not in main_service(manifests)["metadata"]["labels"]
    assert monitor["spec"]["endpoints"] == [
        {"port": port, "path": "/metrics", "interval": "15s"} for port in ("metrics", "guard-metrics")
    ]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_dashboard_configmap_carries_sidecar_label_when_enabled() -> None:
    """The Grafana dashboard ConfigMap has grafana_dashboard: "1" and valid dashboard JSON."""
    configmap = next(m for m in render(load_values("everything")) if m["metadata"]["name"].endswith("-dashboard"))
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    (dashboard_json,) = configmap["data"].values()
    dashboard = json.loads(dashboard_json)
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    assert "nv_inference_queue_duration_us" in exprs and "nv_inference_request_success" in exprs


def test_networkpolicy_admits_release_pods_and_listed_peers_when_enabled() -> None:
    """Inference ports admit this release's pods and ingressFrom; metrics admits metricsFrom."""
    policy = only(render(load_values("everything")), "NetworkPolicy")
    inference, metrics = policy["spec"]["ingress"][0], policy["spec"]["ingress"][-1]
    assert [p["port"] for p in inference["ports"]] == ["http", "grpc"]
    assert inference["from"][0] == {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": RELEASE}}}
    assert inference["from"][1]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "apps"}
    assert [p["port"] for p in metrics["ports"]] == ["metrics", "guard-metrics"]
    assert metrics["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}


# --- batch scoring -----------------------------------------------------------------------------


def test_batch_job_scores_one_shard_per_index_when_batch_enabled() -> None:
    """An Indexed Job runs `tritonkit score` on shard $(JOB_COMPLETION_INDEX)/N of this run, against every
    Triton replica (headless Service), waiting for Triton and counting rejected rows as done."""
    manifests = render(load_values("batch"))
    job = only(manifests, "Job")
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 8, 3)
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    container = pod["containers"][0]
    assert container["image"] == "registry.example.com/tritonkit:0.1.0"
    headless = only(manifests, "Service", "-headless")
    assert container["args"] == [
        "score",
        "--model",
        "churn",
        "--input",
        "/data/input/customers.parquet",
        "--output",
        "/data/scores/$(TRITONKIT_RUN_ID)/shard-$(JOB_COMPLETION_INDEX)-of-8.parquet",
        "--url",
        f"dns:///{headless['metadata']['name']}.{NAMESPACE}.svc.cluster.local:8001",
        "--shard",
        "$(JOB_COMPLETION_INDEX)/8",
        "--retry-s",
        "600",
        "--rejects-exit-code",
        "0",
        "--resume",
    ]
    index_env = next(e for e in container["env"] if e["name"] == "JOB_COMPLETION_INDEX")
    assert "job-completion-index" in index_env["valueFrom"]["fieldRef"]["fieldPath"]
    assert container["envFrom"] == [{"secretRef": {"name": "scoring-env"}}]
    data = next(m for m in container["volumeMounts"] if m["mountPath"] == "/data")
    claim = next(v for v in pod["volumes"] if v["name"] == data["name"])["persistentVolumeClaim"]
    assert claim == {"claimName": "scoring-data"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_batch_cronjob_runs_same_sharded_job_nightly_when_batch_enabled() -> None:
    """The CronJob's job template equals the one-off Job's spec, on the configured schedule."""
    manifests = render(load_values("batch"))
    cronjob = only(manifests, "CronJob")
    assert cronjob["spec"]["schedule"] == "30 1 * * *"
    assert cronjob["spec"]["timeZone"] == "Europe/Paris"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert cronjob["spec"]["jobTemplate"]["spec"] == only(manifests, "Job")["spec"]
    assert len(cronjob["metadata"]["name"]) <= 52


def test_batch_job_name_changes_only_when_job_spec_changes() -> None:
    """The Job name carries a hash of its spec, so an upgrade never patches an immutable Job."""
    values = load_values("batch")
    name = only(render(values), "Job")["metadata"]["name"]
    assert only(render(json.loads(json.dumps(values))), "Job")["metadata"]["name"] == name
    changed = json.loads(json.dumps(values))
    changed["batch"]["shards"] = 16
    assert only(render(changed), "Job")["metadata"]["name"] != name


def test_batch_job_dials_given_address_when_triton_url_is_set() -> None:
    """batch.tritonUrl replaces the in-cluster Service address."""
    values = load_values("batch")
    values["batch"]["tritonUrl"] = "triton.shared.svc:9001"
    args = only(render(values), "Job")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--url") + 1] == "triton.shared.svc:9001"


def test_batch_resources_absent_when_batch_disabled() -> None:
    """batch.enabled: false renders neither Job nor CronJob, whatever the other batch settings."""
    values = load_values("batch")
    values["batch"]["enabled"] = False
    assert not {"Job", "CronJob"} & {m["kind"] for m in render(values)}


# --- helm test ---------------------------------------------------------------------------------


def test_test_pod_curls_ready_endpoint_through_service_when_helm_test_runs() -> None:
    """The helm test hook fails unless GET /v2/health/ready through the Service answers 200."""
    manifests = render()
    pod = only(manifests, "Pod", "-test-ready")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    args = pod["spec"]["containers"][0]["args"]
    assert "--fail" in args
    assert args[-1] == f"http://{main_service(manifests)['metadata']['name']}:8000/v2/health/ready"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
