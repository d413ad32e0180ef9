"""`tritonkit predict` (one real-time call) and `tritonkit models` (what a repository or a server holds)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tritonkit.cli.options import endpoint_options, option_group, read_record
from tritonkit.errors import UsageError


@option_group(endpoint_options(timeout_ms=10_000))
def predict(
    model: str = typer.Option(..., "--model", "-m", envvar="TRITONKIT_MODEL"),
    input: str = typer.Option(
        ..., "--input", "-i", help='One record as JSON: {"input_name": value, ...} (or @file.json).'
    ),
    version: str = typer.Option("", envvar="TRITONKIT_VERSION", help="Model version (latest when empty)."),
    endpoint=None,
):
    """One real-time prediction; prints JSON with the outputs, model version and latency_ms."""
    from tritonkit.clients import TritonClient

    features = read_record(input, "--input")
    with TritonClient(endpoint) as client:
        prediction = client.predict(model, features, version=version, timeout_ms=endpoint.timeout_s * 1000)
    typer.echo(json.dumps(prediction.to_dict()))


@option_group(endpoint_options(timeout_ms=10_000, retry_s=0.0, url=""))
def models(
    repository: Path | None = typer.Option(None, "--repository", "-r", help="A model repository folder to describe."),
    model: list[str] = typer.Option(
        [],
        "--model",
        "-m",
        help="With --url: only these models (their configs stay "
        "readable when the server keeps its model list behind the admin key).",
    ),
    json_output: bool = typer.Option(False, "--json", help="Print JSON for programs."),
    endpoint=None,
):
    """What a model repository (--repository) or a running server (--url) holds: versions, inputs and outputs,
    batching and instances."""
    from tritonkit import inventory

    if (repository is None) == (endpoint is None):
        raise UsageError("give --repository DIR or --url HOST:PORT (one of them)")
    found = inventory.from_repository(repository) if repository else inventory.from_server(endpoint, model)
    if json_output:
        typer.echo(json.dumps([m.to_dict() for m in found], indent=1))
    else:
        inventory.print_table(found, source=str(repository or endpoint.url))
