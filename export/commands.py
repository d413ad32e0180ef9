"""`tritonkit export ...`: one subcommand per source framework; each writes the next model version."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

export_app = typer.Typer(no_args_is_help=True, help="Export a trained model into a Triton model repository.")


@export_app.command("churn")
def export_churn(
    repository: Path = typer.Option(Path("model_repository"), "--repository", "-r"),
    name: str = typer.Option("churn", help="Model name in the repository."),
    version: Optional[int] = typer.Option(None, help="Pin a version number (default: next one)."),
    replace: bool = typer.Option(False, help="Overwrite the pinned --version if it exists."),
):
    """Train the example churn model (synthetic data, deterministic) and export it."""
    from tritonkit.export.churn import export_churn as run

    result = run(repository, name=name, version=version, replace=replace)
    typer.echo(f"exported {name} version {result.version} to {result.path}")
    for parity in result.parity:
        typer.echo(f"  parity vs PyTorch, {parity}")
