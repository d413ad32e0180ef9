"""`tritonkit server-env`: the embedded server's own Python environment (tritonserver, numpy<2, onnxruntime).

`tritonkit serve` builds it on first use; this command builds it ahead of time, adds the groups other
backends need (`--with trees`, `--with torch`), rebuilds it, or prints where it is.
"""

from __future__ import annotations

import typer


def server_env(
    with_groups: list[str] = typer.Option(
        [],
        "--with",
        help="Also install these groups (repeat or comma-separate): trees (the fil backend: XGBoost, LightGBM), "
        "torch (the pytorch backend).",
    ),
    rebuild: bool = typer.Option(False, "--rebuild", help="Build it again from scratch, with the groups it had."),
    print_path: bool = typer.Option(False, "--print-path", help="Only print its folder (builds nothing)."),
):
    """Build (once) or update the embedded server's Python environment; print where it is and what it holds.

    It lives at $TRITONKIT_SERVER_ENV, or in the user's cache folder keyed by the kit's and Python's versions."""
    from tritonkit.server.environment import ServerEnvironment, check_groups

    environment = ServerEnvironment.default()
    if print_path:
        typer.echo(str(environment.path))
        return
    groups = check_groups(g.strip() for value in with_groups for g in value.split(",") if g.strip())
    if rebuild:
        groups = check_groups([*groups, *environment.installed()])
    environment.ensure(groups, rebuild=rebuild)
    found = environment.query()
    held = ", ".join(environment.installed()) if environment.managed else "as given (not built by tritonkit)"
    typer.echo(f"{environment.path}: Python {found['version']}, groups {held}")
