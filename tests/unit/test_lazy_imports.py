"""The command line loads no heavy library until a command runs: `tritonkit --help` and every command's
--help stay fast, and a client-only install can list every command whatever extras it lacks."""

from __future__ import annotations

import json
import subprocess
import sys

# What the extras bring, and what the client itself loads only when it talks to Triton or reads data.
HEAVY = (
    "numpy",
    "pandas",
    "pyarrow",
    "torch",
    "tritonclient",
    "grpc",
    "onnx",
    "onnxruntime",
    "pyspark",
    "locust",
    "gevent",
    "matplotlib",
    "sklearn",
    "transformers",
)

LOADED = """
import json, sys
import tritonkit.cli
{action}
print(json.dumps(sorted({{name.split(".")[0] for name in sys.modules}})))
"""

# Render --help of the root and of every command (subcommands included), as a user asking would.
EVERY_HELP = """
from tritonkit.cli import cli

def helps(command, path):
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from helps(sub, [*path, name])

for argv in helps(cli(), []):
    try:
        cli().main([*argv, "--help"], prog_name="tritonkit", standalone_mode=False)
    except SystemExit:
        pass
"""


def loaded_modules(action: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", LOADED.format(action=action)], capture_output=True, text=True, timeout=120, check=True
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_cli_import_loads_no_heavy_module_when_imported():
    assert loaded_modules("") & set(HEAVY) == set()


def test_cli_help_loads_no_heavy_module_when_every_command_help_is_rendered():
    assert loaded_modules(EVERY_HELP) & set(HEAVY) == set()
