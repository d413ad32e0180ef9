"""The chart's Triton as an operator reads it: what is closed and who holds the key, what the NetworkPolicy
lets in, what an upgrade restarts, and the `helm test` inference; no cluster, no socket.

The restricted API groups and the admin header are compared with `tritonkit serve`'s own
(tritonkit.server.security), so the chart and the kit cannot drift apart.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from helm_render import (
    CHART_DIR,
    FULLNAME,
    load_values,
    main_service,
    only,
    render,
    render_error,
    render_raw,
    triton_container,
)

from tritonkit.server.security import ADMIN_HEADER, DEFAULT_RESTRICTED_APIS, RESTRICTABLE_APIS, check_admin_key


def restricted_flags(args: list[str]) -> dict[str, tuple[list[str], str, str]]:
    """Triton's restricted-API flags: flag -> (groups, header, value), parsed as Triton reads
    `--http-restricted-api=<apis>:<key>=<value>`."""
    found = {}
    for arg in args:
        flag, _, setting = arg.partition("=")
        if flag in ("--http-restricted-api", "--grpc-restricted-protocol"):
            apis, _, header_value = setting.partition(":")
            header, _, value = header_value.partition("=")
            found[flag] = (apis.split(","), header, value)
    return found


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


# --- defect 4: management APIs closed, the key from a Secret -------------------------------------


def test_triton_closes_the_groups_tritonkit_serve_closes_when_defaults() -> None:
    """Both protocols close exactly `tritonkit serve`'s default groups behind its admin header, with the
    key expanded from an env var that reads the admin-key Secret."""
    container = triton_container(render())
    flags = restricted_flags(container["args"])
    assert set(flags) == {"--http-restricted-api", "--grpc-restricted-protocol"}
    for apis, header, value in flags.values():
        assert sorted(apis) == sorted(DEFAULT_RESTRICTED_APIS)
        assert header == ADMIN_HEADER and value == "$(TRITONKIT_ADMIN_KEY)"
    key_ref = env_of(container)["TRITONKIT_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]
    assert key_ref == {"name": f"{FULLNAME}-admin-key", "key": "admin-key"}


def test_generated_admin_key_is_a_valid_kit_key_and_stays_out_of_the_pod_spec_when_drawn() -> None:
    """The chart draws a key tritonkit accepts (16-256 safe characters) into its Secret; the Deployment
    refers to it and never carries it."""
    manifests = render()
    secret = only(manifests, "Secret")
    assert secret["metadata"]["name"] == f"{FULLNAME}-admin-key"
    key = base64.b64decode(secret["data"]["admin-key"]).decode()
    check_admin_key(key)
    assert key not in json.dumps(only(manifests, "Deployment"))


def test_admin_key_comes_from_existing_secret_when_named() -> None:
    manifests = render({"triton": {"adminKey": {"existingSecret": "triton-admin", "secretKey": "key"}}})
    assert not [m for m in manifests if m["kind"] == "Secret"]
    key_ref = env_of(triton_container(manifests))["TRITONKIT_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]
    assert key_ref == {"name": "triton-admin", "key": "key"}


def test_every_group_open_and_no_key_when_restricted_apis_is_empty() -> None:
    manifests = render({"triton": {"restrictedApis": []}})
    container = triton_container(manifests)
    assert restricted_flags(container["args"]) == {}
    assert "TRITONKIT_ADMIN_KEY" not in env_of(container)
    assert not [m for m in manifests if m["kind"] == "Secret"]


def test_chart_offers_the_kits_restrictable_groups_when_schema_is_read() -> None:
    """values.schema.json lists exactly Triton's groups as the kit knows them."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    items = schema["properties"]["triton"]["properties"]["restrictedApis"]["items"]["enum"]
    assert sorted(items) == sorted(RESTRICTABLE_APIS)


def test_render_refuses_to_restrict_health_when_probes_need_it() -> None:
    message = render_error({"triton": {"restrictedApis": ["health"]}})
    assert "triton.restrictedApis" in message and "probes" in message


INGRESS = {"enabled": True, "hosts": [{"host": "triton.example.com", "paths": [{"path": "/"}]}]}


@pytest.mark.parametrize("mode", ["explicit", "poll"])
def test_render_refuses_model_control_through_ingress_when_not_accepted(mode: str) -> None:
    """explicit or poll model control with an Ingress needs ingress.allowModelControl, and says so."""
    message = render_error({"triton": {"modelControlMode": mode}, "ingress": INGRESS})
    assert f"modelControlMode={mode}" in message and "ingress.allowModelControl=true" in message
    accepted = render({"triton": {"modelControlMode": mode}, "ingress": {**INGRESS, "allowModelControl": True}})
    assert f"--model-control-mode={mode}" in triton_container(accepted)["args"]


def test_ingress_renders_with_static_models_when_control_mode_is_none() -> None:
    assert only(render({"ingress": INGRESS}), "Ingress")["spec"]["rules"][0]["host"] == "triton.example.com"


# --- defect 6: NetworkPolicy and Ingress controller ---------------------------------------------


def test_networkpolicy_admits_ingress_controller_to_routed_port_when_ingress_and_policy_are_on() -> None:
    """With ingressFrom set, the Ingress controller's pods (namespace and pod selectors from values) reach
    the port the Ingress routes to; without it the Ingress could not reach Triton."""
    policy = only(render(load_values("everything")), "NetworkPolicy")
    routed = [r for r in policy["spec"]["ingress"] if r["ports"] == [{"port": "grpc", "protocol": "TCP"}]]
    (rule,) = routed
    assert rule["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
        }
    ]


def test_networkpolicy_selects_given_controller_when_selectors_are_set() -> None:
    values = load_values("everything")
    values["networkPolicy"]["ingressController"] = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "traefik"}},
        "podSelector": None,  # null drops the default (Helm merges maps key by key)
    }
    policy = only(render(values), "NetworkPolicy")
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "traefik"}}} in [
        peer for rule in policy["spec"]["ingress"] for peer in rule.get("from", [])
    ]


def test_networkpolicy_has_no_controller_rule_when_ingress_is_off() -> None:
    values = load_values("everything")
    values["ingress"]["enabled"] = False
    values["triton"]["modelControlMode"] = "none"
    policy = only(render(values), "NetworkPolicy")
    assert len(policy["spec"]["ingress"]) == 2


def test_render_fails_when_controller_selectors_are_both_empty() -> None:
    values = load_values("everything")
    values["networkPolicy"]["ingressController"] = {"namespaceSelector": None, "podSelector": None}
    assert "networkPolicy.ingressController" in render_error(values)


# --- defect 6: an upgrade of the chart or the kit does not restart Triton ------------------------


def bumped_chart(tmp_path: Path) -> helm.Chart:
    """A copy of the chart with a new chart version and a new kit version (appVersion)."""
    copy = tmp_path / "tritonkit"
    shutil.copytree(CHART_DIR, copy)
    meta = yaml.safe_load((copy / "Chart.yaml").read_text())
    meta["version"], meta["appVersion"] = "9.9.9", "9.9.9"
    (copy / "Chart.yaml").write_text(yaml.safe_dump(meta))
    return helm.Chart.load(copy)


def test_triton_pod_template_unchanged_when_chart_and_kit_versions_are_bumped(tmp_path: Path) -> None:
    """The Deployment's pod template (what a rollout compares) is identical across a version bump, while
    the resources' own labels and the batch image do follow the new version. The guard sidecar runs the
    kit's image: pinning `guard.image.tag` keeps a kit upgrade from rolling Triton's pods (unpinned, the
    new guard rolls them, as any new sidecar image does)."""
    values = load_values("batch")
    values["kitImage"] = {"repository": "registry.example.com/tritonkit"}  # tag: the chart's appVersion
    values["guard"] = {"image": {"repository": "registry.example.com/tritonkit", "tag": "0.1.0"}}

    def deployment_and_job(loaded=None):
        docs = render_raw(values, loaded=loaded)
        deployment = yaml.safe_load(docs["tritonkit/templates/deployment.yaml"])
        job = yaml.safe_load(docs["tritonkit/templates/job.yaml"])
        return deployment, job

    before, job_before = deployment_and_job()
    after, job_after = deployment_and_job(bumped_chart(tmp_path))
    assert after["spec"]["template"] == before["spec"]["template"]
    assert after["metadata"]["labels"]["app.kubernetes.io/version"] == "9.9.9"
    assert job_after["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":9.9.9")
    assert job_before["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":0.1.0")
    pod_labels = before["spec"]["template"]["metadata"]["labels"]
    assert "app.kubernetes.io/version" not in pod_labels and "helm.sh/chart" not in pod_labels


def test_pod_labels_from_values_reach_triton_pods_when_set() -> None:
    labels = only(render({"podLabels": {"team": "ml"}}), "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert labels["team"] == "ml"


# --- helm test: one real inference ---------------------------------------------------------------


def test_inference_test_posts_the_request_to_the_model_when_configured() -> None:
    """A helm test pod POSTs tests.inference.request as JSON to /v2/models/<model>/infer through the
    Service; an error answer fails it (--fail-with-body)."""
    values = load_values("everything")
    manifests = render(values)
    pod = only(manifests, "Pod", "-test-inference")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    args = pod["spec"]["containers"][0]["args"]
    assert "--fail-with-body" in args
    assert json.loads(args[args.index("--data") + 1]) == values["tests"]["inference"]["request"]
    assert "Content-Type: application/json" in args
    service = main_service(manifests)
    http = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "http")
    assert args[-1] == f"http://{service['metadata']['name']}:{http}/v2/models/churn/infer"


def test_inference_test_absent_when_no_model_is_named() -> None:
    assert [m["metadata"]["name"] for m in render() if m["kind"] == "Pod"] == [f"{FULLNAME}-test-ready"]


def test_render_fails_naming_request_when_inference_test_has_no_request() -> None:
    assert "tests.inference.request" in render_error({"tests": {"inference": {"model": "churn"}}})


def test_inference_test_sends_admin_key_when_inference_is_restricted() -> None:
    values = load_values("everything")
    values["triton"]["restrictedApis"] = ["model-repository", "inference"]
    container = only(render(values), "Pod", "-test-inference")["spec"]["containers"][0]
    assert f"{ADMIN_HEADER}: $(TRITONKIT_ADMIN_KEY)" in container["args"]
    assert env_of(container)["TRITONKIT_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]["name"] == f"{FULLNAME}-admin-key"
