"""The Helm chart's guard sidecar (templates/_guard.tpl): what the Service and the Ingress expose over HTTP is
the guard, Triton's own HTTP listens on loopback, and the values configure it. Rendered by Helm's engine,
without a cluster or a socket (helpers from test_helm_chart)."""

from __future__ import annotations

import pytest
from helm_render import main_service
from test_helm_chart import load_values, only, render, render_error, triton_container

from tritonkit.cli import cli


def containers(manifests) -> dict[str, dict]:
    spec = only(manifests, "Deployment")["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec["containers"]}


def ports(container) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container["ports"]}


def test_guard_sidecar_fronts_triton_http_when_defaults() -> None:
    manifests = render()
    found = containers(manifests)
    assert list(found) == ["tritonserver", "guard"]
    triton, guard = found["tritonserver"], found["guard"]
    assert "--http-address=127.0.0.1" in triton["args"] and "--http-port=8000" in triton["args"]
    assert ports(triton) == {"triton-http": 8000, "grpc": 8001, "metrics": 8002}
    assert ports(guard) == {"http": 8080, "guard-metrics": 8003}
    assert guard["image"] == "tritonkit:0.1.0"
    assert guard["args"][:4] == [
        "guard",
        "--upstream=127.0.0.1:8000",
        "--listen=0.0.0.0:8080",
        "--metrics-listen=0.0.0.0:8003",
    ]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert triton[probe]["httpGet"]["port"] == 8080, probe  # Triton's HTTP is loopback-only: through the guard
    assert guard["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert guard["securityContext"]["readOnlyRootFilesystem"] and guard["securityContext"]["runAsNonRoot"]


def test_guard_args_are_options_of_the_tritonkit_guard_command_when_rendered() -> None:
    guard = containers(render(load_values("guard-custom")))["guard"]
    command = cli().commands["guard"]
    context = command.make_context("guard", list(guard["args"][1:]))  # raises on an unknown option or bad value
    assert context.params["listen"] == "0.0.0.0:9000" and context.params["max_tensor_bytes"] == 524288


def test_service_and_ingress_reach_triton_http_through_the_guard_when_ingress_enabled() -> None:
    manifests = render(load_values("guard-custom"))
    service_ports = {p["name"]: p for p in main_service(manifests)["spec"]["ports"]}
    assert service_ports["http"]["targetPort"] == "http"  # the pod's "http" port is the guard's
    assert service_ports["guard-metrics"]["targetPort"] == "guard-metrics"
    assert service_ports["guard-metrics"]["port"] == 9003
    guard = containers(manifests)["guard"]
    assert ports(guard) == {"http": 9000, "guard-metrics": 9003}
    ingress = only(manifests, "Ingress")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["port"] == {"name": "http"}
    policy = only(manifests, "NetworkPolicy")
    inference, metrics = policy["spec"]["ingress"]
    assert [p["port"] for p in inference["ports"]] == ["http", "grpc"]
    assert [p["port"] for p in metrics["ports"]] == ["metrics", "guard-metrics"]
    endpoints = only(manifests, "ServiceMonitor")["spec"]["endpoints"]
    assert [e["port"] for e in endpoints] == ["metrics", "guard-metrics"]


def test_guard_takes_image_limits_and_resources_when_configured() -> None:
    guard = containers(render(load_values("guard-custom")))["guard"]
    assert guard["image"] == "registry.example.com/tritonkit:0.1.0" and guard["imagePullPolicy"] == "Always"
    assert {"--max-body-bytes=1048576", "--max-json-bytes=65536", "--max-tensor-bytes=524288"} <= set(guard["args"])
    assert guard["args"][-1] == "--max-json-bytes=32768"  # extraArgs last
    assert guard["resources"] == {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}


def test_triton_serves_its_own_http_when_guard_disabled() -> None:
    manifests = render(load_values("guard-off"))
    assert list(containers(manifests)) == ["tritonserver"]
    triton = triton_container(manifests)
    assert not any(a.startswith("--http-address") for a in triton["args"])
    assert ports(triton)["http"] == 8000 and triton["livenessProbe"]["httpGet"]["port"] == "http"
    assert {p["name"] for p in main_service(manifests)["spec"]["ports"]} == {"http", "grpc", "metrics"}
    assert [e["port"] for e in only(manifests, "ServiceMonitor")["spec"]["endpoints"]] == ["metrics"]


@pytest.mark.parametrize("values", [{"guard": {"prot": 8080}}, {"guard": {"maxBodyBytes": 0}}, {"guard": {"port": 0}}])
def test_chart_refuses_guard_values_when_unknown_or_out_of_range(values) -> None:
    assert "guard" in render_error(values)
