"""The Helm chart's tritonserver flags and its `helm test` inference request, run against the real Triton.

The embedded server is Triton 2.51 (24.10); the chart pins 25.06-py3 (past 2.51's gRPC cancellation
crash), which cannot run here: the flags are checked against 2.51. It is started with the flags the chart renders for its Deployment (restricted APIs with the admin key expanded as
Kubernetes would, gRPC connection age, logging), so a flag Triton 2.51 rejects or misreads fails here;
then the chart's example inference request (tests/unit/helm_values/everything.yaml) is sent as the
helm test pod sends it, and the closed groups are probed with and without the key.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import helm_python as helm
import pytest
import tritonclient.grpc as grpcclient
import yaml
from tritonclient.utils import InferenceServerException

from tritonkit.server import EmbeddedServer
from tritonkit.server.security import ADMIN_HEADER, admin_headers

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "helm" / "tritonkit"
EVERYTHING = yaml.safe_load((REPO_ROOT / "tests" / "unit" / "helm_values" / "everything.yaml").read_text())
ADMIN_KEY = "chart-admin-key-0123456789abcdef"
# Flags EmbeddedServer sets itself (paths and ports of this machine).
OWN_FLAGS = ("--model-repository", "--model-control-mode", "--http-port", "--grpc-port", "--metrics-port")


def chart_args() -> list[str]:
    """The Deployment's tritonserver args with $(TRITONKIT_ADMIN_KEY) expanded, as the kubelet would."""
    rendered = helm.Chart.load(CHART_DIR).render({}, name="rel", namespace="ml")
    deployment = yaml.safe_load(rendered["tritonkit/templates/deployment.yaml"])
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    expanded = [re.sub(r"\$\(TRITONKIT_ADMIN_KEY\)", ADMIN_KEY, a) for a in args]
    return [a for a in expanded if a.split("=", 1)[0] not in OWN_FLAGS]


@pytest.fixture(scope="module")
def chart_server(churn_repository, tmp_path_factory):
    args = chart_args()
    assert any(a.startswith("--http-restricted-api=") for a in args)
    assert any(a.startswith("--grpc-max-connection-age=") for a in args)
    log = tmp_path_factory.mktemp("logs") / "triton.log"
    server = EmbeddedServer(
        churn_repository, http_port=0, grpc_port=0, metrics_port=0, log_file=log, restricted_apis=(), extra_args=args
    )
    with server as running:
        yield running


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_helm_test_request_gets_churn_outputs_when_triton_runs_the_charts_flags(chart_server) -> None:
    """The helm test pod's request (JSON body, Content-Type header, no key) is answered with the outputs."""
    inference = EVERYTHING["tests"]["inference"]
    url = f"http://{chart_server.http_url}/v2/models/{inference['model']}/infer"
    status, answer = post(url, json.dumps(inference["request"]).encode(), {"Content-Type": "application/json"})
    assert status == 200, answer
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert {"probability", "label"} <= set(outputs)
    assert 0.0 <= outputs["probability"]["data"][0] <= 1.0


def test_repository_api_answers_only_with_the_key_when_restricted_by_the_chart(chart_server) -> None:
    """model-repository is closed over HTTP and gRPC without the admin key and open with it."""
    url = f"http://{chart_server.http_url}/v2/repository/index"
    status, answer = post(url, b"{}", {})
    assert status >= 400 and "restricted" in answer.get("error", ""), answer
    status, answer = post(url, b"{}", {ADMIN_HEADER: ADMIN_KEY})
    assert status == 200 and any(m["name"] == "churn" for m in answer)

    client = grpcclient.InferenceServerClient(chart_server.grpc_url)
    try:
        with pytest.raises(InferenceServerException, match="restricted"):
            client.get_model_repository_index()
        index = client.get_model_repository_index(headers=admin_headers(ADMIN_KEY, "grpc"), as_json=True)
        assert any(m["name"] == "churn" for m in index["models"])
        assert client.is_server_ready()  # health stays open
    finally:
        client.close()
