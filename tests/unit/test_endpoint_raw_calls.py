"""What the Locust users take from an Endpoint for their raw calls: call metadata, base URL, a channel (no sockets)."""

from __future__ import annotations

import grpc

from tritonkit.clients.endpoint import Endpoint


def test_endpoint_gives_headers_as_grpc_metadata_when_headers_are_set():
    endpoint = Endpoint("127.0.0.1:8001", headers={"Authorization": "Bearer x", "x-team": "ml"})
    assert endpoint.grpc_metadata() == (("authorization", "Bearer x"), ("x-team", "ml"))
    assert Endpoint("127.0.0.1:8001").grpc_metadata() == ()


def test_endpoint_base_url_says_https_when_ssl_is_on():
    assert Endpoint("triton:8000", protocol="http").http_base_url() == "http://triton:8000"
    assert Endpoint("triton:8000", protocol="http", ssl=True).http_base_url() == "https://triton:8000"


def test_endpoint_builds_a_channel_without_connecting_when_asked():
    channel = Endpoint("127.0.0.1:1").grpc_channel()  # nothing listens there: creating it must not connect
    try:
        assert isinstance(channel, grpc.Channel)
    finally:
        channel.close()
