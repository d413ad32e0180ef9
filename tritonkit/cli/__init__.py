"""The `tritonkit` command line: one entry point, one subcommand per job, each a thin layer over the library.

Environment: every option reads `TRITONKIT_<COMMAND>_<OPTION>` (for example TRITONKIT_SCORE_CHUNK_ROWS,
TRITONKIT_EXPORT_SKLEARN_NAME); options that several commands share also read a short name
(TRITONKIT_URL, TRITONKIT_MODEL, ...). `--help` lists both for every option; a flag on the command
line wins over the environment. A repeatable option takes one value per line of its variable.
"""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console
from rich.markup import escape
from typer._click import ClickException  # typer vendors click
from typer.core import TyperGroup

from tritonkit.cli import bench, export, gateway, guard, hybrid, plan, predict, score, serve, server_env, tune
from tritonkit.errors import NotFreshError, RowsRejectedError, TritonKitError, exit_code_for

ENV_PREFIX = "TRITONKIT"

console = Console(stderr=True, soft_wrap=True)  # one line per error, whatever the width


class KitGroup(TyperGroup):
    """The root command: applies the environment rule, and turns the kit's errors into one line and an exit code
    (for the console script and for in-process callers such as typer's CliRunner alike)."""

    def main(self, *args, **kwargs):
        with_environment(self)
        return super().main(*args, **kwargs)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except TritonKitError as e:
            outcome = isinstance(e, (NotFreshError, RowsRejectedError))
            label = "[yellow]note:[/yellow]" if outcome else "[red]error:[/red]"
            console.print(f"{label} {escape(str(e))}", highlight=False)  # `pip install 'tritonkit[export]'` stays
            ctx.exit(exit_code_for(e))


app = typer.Typer(cls=KitGroup, add_completion=False, no_args_is_help=True, help=__doc__.split("\n")[0])
app.add_typer(export.export_app, name="export")
app.command("serve")(serve.serve)
app.command("guard")(guard.guard)
app.command("server-env")(server_env.server_env)
app.command("predict")(predict.predict)
app.command("models")(predict.models)
app.command("score")(score.score)
app.command("lookup")(hybrid.lookup)
app.command("freshness")(hybrid.freshness)
app.command("gateway")(gateway.gateway)
app.add_typer(gateway.features_app, name="features")
app.command("bench")(bench.bench)
app.command("plan")(plan.plan)
app.command("tune")(tune.tune)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what the kit does.")):
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def with_environment(command, path: str = ENV_PREFIX):
    """Gives every option of `command` (and its subcommands) the variable TRITONKIT_<COMMAND>_<OPTION>,
    after any short name it declares, and shows them in --help."""
    if hasattr(command, "commands"):  # a group
        for name, sub in command.commands.items():
            with_environment(sub, f"{path}_{name.upper().replace('-', '_')}")
        return command
    for param in command.params:
        if param.param_type_name != "option" or param.name == "help":
            continue
        flag = next((o for o in param.opts if o.startswith("--")), param.opts[0])
        own = f"{path}_{flag.lstrip('-').upper().replace('-', '_')}"
        declared = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or ())
        param.envvar = declared + [own] if own not in declared else declared
        param.show_envvar = True
        if param.multiple:
            param.envvar_list_splitter = "\n"  # one value per line: a header value may hold spaces
    return command


def cli():
    """The click command behind `tritonkit`, with the environment rule applied."""
    return with_environment(typer.main.get_command(app))


def main() -> None:
    """Console entry point: kit errors become one line and an exit code, not a traceback."""
    try:
        code = cli().main(standalone_mode=False)  # click returns typer.Exit's code instead of raising it
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        console.print("aborted")
        sys.exit(130)
    except ClickException as e:  # click's own usage errors (unknown option, missing value)
        e.show()
        sys.exit(e.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
