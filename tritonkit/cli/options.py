"""Option groups the commands share, each turned into the library's own value before the command runs.

`@option_group(...)` adds a group's typer options to a command and hands the command one built value
(an `Endpoint`, an `ExportOptions`): the same six connection options are declared once, here, and
validated once, in the library.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import typer

from tritonkit.errors import UsageError


@dataclass(frozen=True)
class OptionGroup:
    """Typer options (name, annotation, typer.Option) and how their values become one argument."""

    target: str
    params: tuple[tuple[str, object, object], ...]
    build: Callable[[dict], object]


def option_group(group: OptionGroup):
    """Decorator for a typer command: adds the group's options and passes their value as `group.target`."""

    def decorate(command):
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != group.target]
        shared = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
            for name, annotation, default in group.params
        ]

        @functools.wraps(command)
        def wrapper(**kwargs):
            values = {name: kwargs.pop(name) for name, _, _ in group.params}
            return command(**kwargs, **{group.target: group.build(values)})

        wrapper.__signature__ = signature.replace(parameters=[*own, *shared])
        wrapper.__annotations__ = {p.name: p.annotation for p in [*own, *shared]}
        return wrapper

    return decorate


_TLS_AND_HEADERS = (
    ("protocol", str, typer.Option("grpc", "--protocol", envvar="TRITONKIT_PROTOCOL", help="grpc or http.")),
    ("ssl", bool, typer.Option(False, "--ssl", envvar="TRITONKIT_SSL", help="TLS to Triton (gRPC or HTTPS).")),
    ("root_certificates", str | None, typer.Option(
        None, "--root-certificates", envvar="TRITONKIT_ROOT_CERTIFICATES",
        help="CA bundle (PEM) that signed the server's certificate.")),
    ("client_cert", str | None, typer.Option(
        None, "--client-cert", envvar="TRITONKIT_CLIENT_CERT", help="Client certificate (PEM) for mutual TLS.")),
    ("client_key", str | None, typer.Option(
        None, "--client-key", envvar="TRITONKIT_CLIENT_KEY", help="Private key of --client-cert (PEM).")),
    ("header", list[str], typer.Option(
        [], "--header", envvar="TRITONKIT_HEADER",
        help="'NAME=VALUE' or 'NAME: VALUE' sent with every request (repeatable; one per line in the variable); "
        "values are never printed.")),
)  # fmt: skip


def endpoint_options(
    timeout_ms: float, retry_s: float = 0.0, url: str = "127.0.0.1:8001", target: str = "endpoint"
) -> OptionGroup:
    """How to reach Triton: --url, --protocol, TLS files, --header, --timeout-ms (a call's budget) and
    --retry-s (how long unavailable and overloaded answers are retried); defaults per command."""
    params = (
        ("url", str, typer.Option(
            url, "--url", envvar="TRITONKIT_URL",
            help="HOST:PORT of Triton (dns:///NAME:PORT: gRPC round robin over every address of NAME).")),
        *_TLS_AND_HEADERS,
        ("timeout_ms", float, typer.Option(
            timeout_ms, "--timeout-ms", envvar="TRITONKIT_TIMEOUT_MS",
            help="Budget of one call in ms, connecting included; past it: exit code 11, naming the budget.")),
        ("retry_s", float, typer.Option(
            retry_s, "--retry-s",
            help="Retry unavailable, overloaded or slow answers with jittered backoff for up to this many seconds "
            "per request (a server still starting included); 0: no retries.")),
    )  # fmt: skip
    return OptionGroup(target, params, _endpoint)


def _endpoint(values: dict):
    from tritonkit.clients.endpoint import Endpoint, RetryPolicy, parse_headers

    if not values["url"]:
        return None  # a command where the server is optional (`models --repository`)
    if not values["timeout_ms"] > 0:
        raise UsageError(f"--timeout-ms is {values['timeout_ms']!r}; expected a budget above 0 ms")
    return Endpoint(
        url=values["url"],
        protocol=values["protocol"],
        ssl=values["ssl"],
        root_certificates=values["root_certificates"],
        certificate_chain=values["client_cert"],
        private_key=values["client_key"],
        headers=parse_headers(values["header"]),
        timeout_s=values["timeout_ms"] / 1000,
        retry=RetryPolicy(attempts=1_000_000, max_total_s=values["retry_s"]) if values["retry_s"] > 0 else None,
    )


def read_record(text: str, option: str) -> dict:
    """A JSON object of input names to values, given inline or as @file.json; UsageError naming `option`."""
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise UsageError(f"{option} @{path}: cannot read it as UTF-8 JSON ({why})") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{option} is not valid JSON ({e.msg} at character {e.pos}): {text[:80]!r}") from None
    if not isinstance(record, dict):
        raise UsageError(f"{option} must be a JSON object of input names to values, got {type(record).__name__}")
    return record


def floats(option: str, text: str | None) -> list[float]:
    if not text:
        return []
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"{option} {text!r} is not a comma-separated list of numbers") from None


def names(text: str | None) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()] if text else []
