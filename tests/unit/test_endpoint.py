"""The Endpoint value, the retry rule and the translation of transport errors (no sockets)."""

from __future__ import annotations

import pickle

import pytest
from tritonclient.utils import InferenceServerException

from tritonkit.clients.endpoint import Endpoint, RetryPolicy, parse_headers, retryable, row_level, translate
from tritonkit.errors import (
    DeadlineExceededError,
    ModelNotFoundError,
    OverloadedError,
    ServerError,
    ServerUnavailableError,
    UsageError,
)

SECRET = "Bearer s3cr3t-token"


@pytest.mark.parametrize("url", ["127.0.0.1:99999", "127.0.0.1:0", "127.0.0.1", "http://127.0.0.1:8001", ":8001", ""])
def test_endpoint_raises_usage_error_naming_url_when_not_host_port(url):
    with pytest.raises(UsageError, match="--url .*expected HOST:PORT with a port from 1 to 65535"):
        Endpoint(url)


def test_endpoint_accepts_dns_target_for_grpc_only_when_balancing():
    assert Endpoint("dns:///triton-headless.ml.svc:8001").grpc_channel_args()[-1][0] == "grpc.service_config"
    with pytest.raises(UsageError, match="dns:/// .* gRPC only"):
        Endpoint("dns:///triton:8000", protocol="http")


@pytest.mark.parametrize("value", [f"{SECRET}\nX-Injected: 1", f"{SECRET}\r\n", f"{SECRET}\0"])
def test_endpoint_refuses_header_value_with_line_break_without_showing_it(value):
    with pytest.raises(UsageError) as refused:
        Endpoint("127.0.0.1:8001", headers={"authorization": value})
    assert "line break or NUL" in str(refused.value) and "s3cr3t" not in str(refused.value)


def test_parse_headers_names_position_not_text_when_malformed():
    with pytest.raises(UsageError, match="--header number 2 is not") as refused:
        parse_headers(["a: 1", f"no separator {SECRET}"])
    assert "s3cr3t" not in str(refused.value)
    assert parse_headers(["X-Api-Key=abc", "Authorization: Bearer t"]) == {
        "x-api-key": "abc",
        "authorization": "Bearer t",
    }


def test_endpoint_keeps_headers_out_of_repr_and_read_only():
    endpoint = Endpoint("127.0.0.1:8001", headers={"authorization": SECRET})
    assert "s3cr3t" not in repr(endpoint) and "s3cr3t" not in repr(endpoint.headers)
    with pytest.raises(TypeError):
        endpoint.headers["authorization"] = "other"
    assert endpoint.header_dict == {"authorization": SECRET}


def test_endpoint_survives_pickling_with_its_tls_files_when_shipped_to_spark_executors():
    endpoint = Endpoint("h:1", ssl=True, root_certificates="ca.pem", certificate_chain="me.pem", private_key="me.key",
                        headers={"a": "b"}, retry=RetryPolicy(attempts=3))  # fmt: skip
    copy = pickle.loads(pickle.dumps(endpoint))
    assert copy == endpoint and hash(copy) == hash(endpoint)
    assert (copy.certificate_chain, copy.private_key, copy.header_dict) == ("me.pem", "me.key", {"a": "b"})


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"certificate_chain": "me.pem"}, "--client-cert and --client-key go together"),
        ({"root_certificates": "ca.pem"}, "need --ssl"),
        ({"protocol": "grpcs"}, "--protocol is 'grpcs'"),
        ({"timeout_s": 0}, "expected a budget above 0"),
    ],
)
def test_endpoint_raises_usage_error_when_settings_conflict(settings, message):
    with pytest.raises(UsageError, match=message):
        Endpoint("127.0.0.1:8001", **settings)


def failure(status: str, message: str) -> InferenceServerException:
    return InferenceServerException(msg=message, status=status)


@pytest.mark.parametrize(
    ("error", "kind", "retry", "split"),
    [
        (failure("StatusCode.UNAVAILABLE", "failed to connect to all addresses"), ServerUnavailableError, True, False),
        (failure("400", "[request id: <id_unknown>] Exceeds maximum queue size"), OverloadedError, True, False),
        (
            failure("StatusCode.NOT_FOUND", "Request for unknown model: 'x' is not found"),
            ModelNotFoundError,
            False,
            False,
        ),
        (failure("StatusCode.INVALID_ARGUMENT", "unexpected shape for input 'x'"), ServerError, False, True),
        (ConnectionRefusedError(111, "Connection refused"), ServerUnavailableError, True, False),
        (TimeoutError("timed out"), DeadlineExceededError, True, False),
    ],
)
def test_translate_gives_one_kit_error_and_one_retry_rule_when_transport_fails(error, kind, retry, split):
    translated = translate(error, "churn", Endpoint("127.0.0.1:8001"), budget_ms=500)
    assert type(translated) is kind
    assert retryable(translated) is retry and row_level(translated) is split


def test_translate_does_not_retry_a_restricted_api_when_triton_answers_unavailable():
    refused = failure("StatusCode.UNAVAILABLE", "This API is restricted, expecting header 'tritonkit-admin-key'")
    translated = translate(refused, "churn", Endpoint("127.0.0.1:8001"))
    assert translated.status == "PERMISSION_DENIED" and not retryable(translated) and not row_level(translated)


def test_retry_policy_gives_up_at_its_total_deadline_when_delays_add_up():
    policy = RetryPolicy(attempts=100, base_s=1.0, max_s=1.0, max_total_s=3.0)
    assert not policy.gives_up(0, elapsed_s=1.0, delay_s=1.0)
    assert policy.gives_up(1, elapsed_s=2.5, delay_s=1.0)
    assert RetryPolicy(attempts=2).gives_up(1, elapsed_s=0.0, delay_s=0.0)
