"""TLS on gRPC and HTTP, restricted admin APIs and secrets kept out of output, against the real Triton.

Certificates come from `trustme` (a throwaway CA per module). The `vector` model (y = 2x, FP32 [4])
from conftest's repository is the one served.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from http.client import HTTPException
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import trustme
from tritonclient.utils import InferenceServerException

from tritonkit.clients import TritonClient
from tritonkit.errors import ServerError
from tritonkit.server import EmbeddedServer, free_port
from tritonkit.server.security import ADMIN_HEADER, TlsFiles, admin_headers

TRITONKIT = [sys.executable, "-m", "tritonkit.cli"]
ADMIN_KEY = "test-admin-key-0123456789abcdef"
TOKEN = "s3cr3t-bearer-token-never-printed"
RECORD = '{"x": [1, 2, 3, 4]}'
PROTOCOLS = ["grpc", "http"]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*TRITONKIT, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> SimpleNamespace:
    """A CA with a server certificate for 127.0.0.1 and a client certificate, plus an unrelated CA."""
    folder = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    server, client = ca.issue_cert("127.0.0.1", "localhost"), ca.issue_cert("client@tritonkit.test")
    paths = SimpleNamespace(
        **{
            name: folder / f"{name}.pem"
            for name in ("ca", "other_ca", "server_cert", "server_key", "client_cert", "client_key")
        }
    )
    ca.cert_pem.write_to_path(str(paths.ca))
    other.cert_pem.write_to_path(str(paths.other_ca))
    for cert, chain, key in (
        (server, paths.server_cert, paths.server_key),
        (client, paths.client_cert, paths.client_key),
    ):
        chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(key))
    return paths


@pytest.fixture(scope="module")
def tls_server(churn_repository, pki, tmp_path_factory):
    """TLS on gRPC and HTTP, explicit model control, the admin key known to the tests."""
    tls = TlsFiles(pki.server_cert, pki.server_key)
    log = tmp_path_factory.mktemp("tls-logs") / "triton.log"
    with EmbeddedServer(
        churn_repository,
        http_port=0,
        grpc_port=0,
        metrics_port=0,
        log_file=log,
        model_control_mode="explicit",
        extra_args=["--load-model=vector"],
        grpc_tls=tls,
        http_tls=tls,
        admin_key=ADMIN_KEY,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def mutual_server(churn_repository, pki):
    """Mutual TLS on both endpoints; no admin key given, so the restricted APIs are closed to everyone."""
    tls = TlsFiles(pki.server_cert, pki.server_key, client_ca=pki.ca)
    with EmbeddedServer(
        churn_repository,
        http_port=0,
        grpc_port=0,
        metrics_port=0,
        model_control_mode="explicit",
        extra_args=["--load-model=vector"],
        grpc_tls=tls,
        http_tls=tls,
    ) as running:
        yield running


def url_of(server: EmbeddedServer, protocol: str) -> str:
    return server.grpc_url if protocol == "grpc" else server.http_url


def raw_client(server: EmbeddedServer, protocol: str, ca: Path):
    if protocol == "grpc":
        return grpcclient.InferenceServerClient(server.grpc_url, ssl=True, root_certificates=str(ca))
    return httpclient.InferenceServerClient(server.http_url, ssl=True, ssl_options={"ca_certs": str(ca)})


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_predict_returns_outputs_over_tls_when_client_trusts_the_ca(tls_server, pki, protocol):
    with TritonClient(
        url_of(tls_server, protocol), protocol=protocol, ssl=True, root_certificates=str(pki.ca)
    ) as client:
        assert client.is_ready()
        prediction = client.predict("vector", {"x": [1.0, 2.5, -3.0, 4.0]})
    np.testing.assert_array_equal(prediction.outputs["y"], [[2.0, 5.0, -6.0, 8.0]])


def test_https_proxy_serves_many_keep_alive_requests_when_clients_run_concurrently(tls_server, pki):
    from concurrent.futures import ThreadPoolExecutor

    def calls(seed: int) -> bool:
        rows = np.random.default_rng(seed).normal(size=(8, 4)).astype(np.float32)
        with TritonClient(tls_server.http_url, protocol="http", ssl=True, root_certificates=str(pki.ca)) as client:
            return all(
                np.array_equal(client.infer_arrays("vector", {"x": rows[i : i + 1]})[0]["y"], 2 * rows[i : i + 1])
                for i in range(len(rows))
            )

    before = tls_server._proxy.connections
    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(calls, range(16)))
    # One connection per client, reused for its metadata and eight inferences (keep-alive through the proxy).
    assert tls_server._proxy.connections - before <= 16 * 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_predict_cli_exits_with_clear_error_when_client_does_not_trust_the_ca(tls_server, pki, protocol):
    result = run(
        "predict",
        "--model",
        "vector",
        "--url",
        url_of(tls_server, protocol),
        "--protocol",
        protocol,
        "--input",
        RECORD,
        "--ssl",
        "--root-certificates",
        str(pki.other_ca),
    )
    assert result.returncode == 5, result.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_predict_cli_exits_with_clear_error_when_client_speaks_plain_text_to_tls(tls_server, protocol):
    result = run(
        "predict",
        "--model",
        "vector",
        "--url",
        url_of(tls_server, protocol),
        "--protocol",
        protocol,
        "--input",
        RECORD,
        "--timeout-ms",
        "5000",
    )
    assert result.returncode == 5, result.stderr
    assert f"over {protocol}" in result.stderr or "failed to connect" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_predict_cli_succeeds_over_tls_when_given_the_ca(tls_server, pki, protocol):
    result = run(
        "predict",
        "--model",
        "vector",
        "--url",
        url_of(tls_server, protocol),
        "--protocol",
        protocol,
        "--input",
        RECORD,
        "--ssl",
        "--root-certificates",
        str(pki.ca),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outputs"]["y"] == [2.0, 4.0, 6.0, 8.0]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_mutual_tls_refuses_client_without_certificate_and_serves_one_with_it(mutual_server, pki, protocol):
    url = url_of(mutual_server, protocol)
    with pytest.raises((ServerError, OSError, HTTPException)):
        with TritonClient(url, protocol=protocol, ssl=True, root_certificates=str(pki.ca), timeout_s=5) as client:
            client.predict("vector", {"x": [1, 2, 3, 4]})
    with TritonClient(
        url,
        protocol=protocol,
        ssl=True,
        root_certificates=str(pki.ca),
        certificate_chain=str(pki.client_cert),
        private_key=str(pki.client_key),
    ) as client:
        prediction = client.predict("vector", {"x": [1, 2, 3, 4]})
    np.testing.assert_array_equal(prediction.outputs["y"], [[2, 4, 6, 8]])


def test_predict_cli_uses_client_certificate_when_server_requires_one(mutual_server, pki):
    base = [
        "predict",
        "--model",
        "vector",
        "--url",
        mutual_server.grpc_url,
        "--input",
        RECORD,
        "--ssl",
        "--root-certificates",
        str(pki.ca),
    ]
    refused = run(*base, "--timeout-ms", "5000")
    assert refused.returncode == 5 and "Traceback" not in refused.stderr
    served = run(*base, "--client-cert", str(pki.client_cert), "--client-key", str(pki.client_key))
    assert served.returncode == 0, served.stderr
    assert json.loads(served.stdout)["outputs"]["y"] == [2.0, 4.0, 6.0, 8.0]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_repository_control_refused_without_admin_key_and_allowed_with_it(tls_server, pki, protocol):
    client = raw_client(tls_server, protocol, pki.ca)
    with pytest.raises(InferenceServerException, match=f"restricted, expecting header '.*{ADMIN_HEADER}'"):
        client.unload_model("vector")
    with pytest.raises(InferenceServerException, match="restricted"):
        client.unload_model("vector", headers=admin_headers("wrong-key-0123456789", protocol))
    assert client.is_model_ready("vector")
    # Inference, health, metadata, model config and statistics stay open.
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_model_metadata("vector")
    assert client.get_model_config("vector")
    assert client.get_inference_statistics("vector")
    try:
        client.unload_model("vector", headers=admin_headers(ADMIN_KEY, protocol))
        deadline = time.monotonic() + 30
        while client.is_model_ready("vector") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not client.is_model_ready("vector")
    finally:
        client.load_model("vector", headers=admin_headers(ADMIN_KEY, protocol))
    assert client.is_model_ready("vector")
    with TritonClient(
        url_of(tls_server, protocol), protocol=protocol, ssl=True, root_certificates=str(pki.ca)
    ) as kit_client:
        assert kit_client.predict("vector", {"x": [0, 1, 0, 1]}).outputs["y"].tolist() == [[0, 2, 0, 2]]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_log_settings_refused_when_server_started_without_admin_key(mutual_server, pki, protocol):
    if protocol == "grpc":
        client = grpcclient.InferenceServerClient(
            mutual_server.grpc_url,
            ssl=True,
            root_certificates=str(pki.ca),
            private_key=str(pki.client_key),
            certificate_chain=str(pki.client_cert),
        )
    else:
        client = httpclient.InferenceServerClient(
            mutual_server.http_url,
            ssl=True,
            ssl_options={"ca_certs": str(pki.ca), "certfile": str(pki.client_cert), "keyfile": str(pki.client_key)},
        )
    for headers in (None, admin_headers("guessed-key-0123456789", protocol)):
        with pytest.raises(InferenceServerException, match="restricted"):
            client.update_log_settings({"log_verbose_level": 1}, headers=headers)
        with pytest.raises(InferenceServerException, match="restricted"):
            client.load_model("vector", headers=headers)
    assert client.is_model_ready("vector")


def test_score_cli_uses_client_certificate_when_server_requires_one(mutual_server, pki, tmp_path):
    rows = np.arange(10 * 4, dtype=np.float32).reshape(10, 4)
    source = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"x": pa.FixedSizeListArray.from_arrays(pa.array(rows.ravel()), 4)}), source)
    base = [
        "score",
        "--model",
        "vector",
        "--input",
        str(source),
        "--url",
        mutual_server.grpc_url,
        "--ssl",
        "--root-certificates",
        str(pki.ca),
        "--no-progress",
    ]
    refused = run(*base, "--output", str(tmp_path / "refused.parquet"), "--retry-s", "1")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    served = run(
        *base,
        "--output",
        str(tmp_path / "served.parquet"),
        "--client-cert",
        str(pki.client_cert),
        "--client-key",
        str(pki.client_key),
    )
    assert served.returncode == 0, served.stderr
    scored = pq.read_table(tmp_path / "served.parquet")
    np.testing.assert_array_equal(np.stack(scored.column("y").to_numpy(zero_copy_only=False)), 2 * rows)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_score_over_tls_scores_every_row_and_never_prints_the_token(tls_server, pki, tmp_path, protocol):
    rows = np.arange(40 * 4, dtype=np.float32).reshape(40, 4) / 7
    source = tmp_path / "rows.parquet"
    pq.write_table(
        pa.table({"id": np.arange(40), "x": pa.FixedSizeListArray.from_arrays(pa.array(rows.ravel()), 4)}), source
    )
    output, report = tmp_path / "scores.parquet", tmp_path / "report.json"
    result = run(
        "-v",
        "score",
        "--model",
        "vector",
        "--input",
        str(source),
        "--output",
        str(output),
        "--url",
        url_of(tls_server, protocol),
        "--protocol",
        protocol,
        "--ssl",
        "--root-certificates",
        str(pki.ca),
        "--id-column",
        "id",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--report",
        str(report),
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    body = json.loads(report.read_text())
    assert body["rows_read"] == body["rows_scored"] == 40 and body["rows_rejected"] == 0
    scored = pq.read_table(output).sort_by("id")
    np.testing.assert_array_equal(np.stack(scored.column("y").to_numpy(zero_copy_only=False)), 2 * rows)
    for text in (result.stdout, result.stderr, report.read_text()):
        assert TOKEN not in text


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_predict_cli_never_prints_header_values_when_call_succeeds_or_fails(tls_server, pki, protocol):
    base = [
        "-v",
        "predict",
        "--model",
        "vector",
        "--url",
        url_of(tls_server, protocol),
        "--protocol",
        protocol,
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--header",
        f"x-api-key={TOKEN}",
        "--ssl",
    ]
    runs = [
        run(*base, "--root-certificates", str(pki.ca), "--input", RECORD),
        run(*base, "--root-certificates", str(pki.other_ca), "--input", RECORD),
        run(*base, "--root-certificates", str(pki.ca), "--input", '{"x": [1, "two", 3, 4]}'),
        run(*base[:-1], "--header", f"no separator {TOKEN}", "--input", RECORD),
    ]
    assert [r.returncode for r in runs] == [0, 5, 4, 2]
    for result in runs:
        assert TOKEN not in result.stdout and TOKEN not in result.stderr


def test_serve_cli_never_prints_the_admin_key_and_applies_it(churn_repository, pki, tmp_path):
    key_file, log = tmp_path / "admin.key", tmp_path / "triton.log"
    key_file.write_text(ADMIN_KEY + "\n")
    key_file.chmod(0o600)
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    process = subprocess.Popen(
        [
            *TRITONKIT,
            "-v",
            "serve",
            "--model-repository",
            str(churn_repository),
            "--grpc-port",
            str(grpc_port),
            "--http-port",
            str(http_port),
            "--metrics-port",
            str(metrics_port),
            "--kit-metrics-port",
            "0",
            "--log-file",
            str(log),
            "--model-control-mode",
            "explicit",
            "--admin-key-file",
            str(key_file),
            "--tls-cert",
            str(pki.server_cert),
            "--tls-key",
            str(pki.server_key),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        client = httpclient.InferenceServerClient(
            f"127.0.0.1:{http_port}", ssl=True, ssl_options={"ca_certs": str(pki.ca)}
        )
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None and time.monotonic() < deadline, "serve did not start"
            try:
                if client.is_server_ready():
                    break
            except Exception:
                time.sleep(0.3)
        with pytest.raises(InferenceServerException, match="restricted"):
            client.load_model("vector")
        client.load_model("vector", headers={ADMIN_HEADER: ADMIN_KEY})
        assert client.is_model_ready("vector")
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    assert "restricted APIs model-repository" in stdout and "https 127.0.0.1" in stdout
    assert "--grpc-restricted-protocol" in stderr  # the -v log shows the command line, key masked
    for text in (stdout, stderr, log.read_text(errors="replace")):
        assert ADMIN_KEY not in text


def test_logged_command_masks_the_admin_key_when_restricted_apis_are_on(tmp_path):
    from tritonkit.server.security import masked_command as _masked

    server = EmbeddedServer(tmp_path, admin_key=ADMIN_KEY, restricted_apis=("model-repository", "model-config"))
    args = server._security_args()
    assert f"--http-restricted-api=model-repository,model-config:{ADMIN_HEADER}={ADMIN_KEY}" in args
    assert f"--grpc-restricted-protocol=model-repository,model-config:{ADMIN_HEADER}={ADMIN_KEY}" in args
    assert ADMIN_KEY not in " ".join(_masked(args)) and ADMIN_KEY not in repr(server)
    drawn = EmbeddedServer(tmp_path)._security_args()
    assert len({a.rsplit("=", 1)[1] for a in drawn}) == 1 and ADMIN_KEY not in " ".join(drawn)
    assert EmbeddedServer(tmp_path, restricted_apis=())._security_args() == []


def test_security_options_raise_usage_error_without_quoting_the_key_when_invalid(tmp_path):
    from tritonkit.errors import UsageError
    from tritonkit.server.security import read_admin_key

    with pytest.raises(UsageError, match="'load' is not one of Triton's"):
        EmbeddedServer(tmp_path, restricted_apis=("load",))._security_args()
    short = tmp_path / "short.key"
    short.write_text("s3cr3t\n")
    with pytest.raises(UsageError, match="holds 6 characters; expected 16 to 256") as caught:
        read_admin_key(short)
    assert "s3cr3t" not in str(caught.value)
    with pytest.raises(UsageError, match="cannot be read"):
        read_admin_key(tmp_path / "missing.key")
    with pytest.raises(UsageError, match="gRPC TLS cert file .* does not exist"):
        EmbeddedServer(tmp_path, grpc_tls=TlsFiles(tmp_path / "no.pem", tmp_path / "no.key"))._security_args()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_lookup_cli_reaches_a_tls_server_with_headers_and_budget_and_never_prints_them(
    tls_server, pki, tmp_path, protocol
):
    store = f"sqlite://{tmp_path / 'preds.db'}"
    base = ["lookup", "--model", "vector", "--id", "e-1", "--store", store, "--url", url_of(tls_server, protocol),
            "--protocol", protocol, "--ssl", "--root-certificates", str(pki.ca), "--header", f"Authorization: Bearer {TOKEN}",
            "--timeout-ms", "5000"]  # fmt: skip
    live = run(*base, "--features", RECORD)
    assert live.returncode == 0, live.stderr
    answer = json.loads(live.stdout)
    assert (answer["status"], answer["source"], answer["outputs"]["y"]) == ("miss", "live", [2.0, 4.0, 6.0, 8.0])
    hit = run(*base)
    assert json.loads(hit.stdout)["status"] == "hit"
    untrusted = run(*base[:-5], "--ssl", "--root-certificates", str(pki.other_ca), "--id", "e-2", "--features", RECORD)
    assert untrusted.returncode == 5 and "Traceback" not in untrusted.stderr
    for result in (live, hit, untrusted):
        assert TOKEN not in result.stdout + result.stderr


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_predict_refuses_a_header_value_with_a_line_break_without_printing_it(tls_server, pki, protocol):
    result = run("predict", "--model", "vector", "--url", url_of(tls_server, protocol), "--protocol", protocol,
                 "--ssl", "--root-certificates", str(pki.ca), "--header", f"Authorization: Bearer {TOKEN}\nX: 1",
                 "--input", RECORD)  # fmt: skip
    assert result.returncode == 2 and "line break" in result.stderr
    assert TOKEN not in result.stdout + result.stderr and "Traceback" not in result.stderr


def test_restricted_api_refusal_is_not_retried_as_an_outage_when_a_retry_policy_is_set(tls_server, pki, caplog):
    from tritonkit.clients.endpoint import RetryPolicy

    with TritonClient(tls_server.grpc_url, ssl=True, root_certificates=str(pki.ca),
                      retry=RetryPolicy(max_total_s=60)) as client:  # fmt: skip
        with pytest.raises(ServerError, match="restricted") as refused:
            client.models()
    assert refused.value.status == "PERMISSION_DENIED"
    assert not [r for r in caplog.records if "try 2" in r.getMessage()]
