"""Triton ensembles: one model clients call, whose steps run other models of the repository in turn.

The typed ModelConfig has no `ensemble_scheduling`: the ensemble's config.pbtxt is built as Triton's
protobuf message from the typed part plus the steps, and written with the same text generator.
Used by the Hugging Face export (tokenizer -> encoder) and the tree Pipelines served through FIL
(preprocessing -> trees -> label).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tritonkit import pbtxt
from tritonkit.export.repository import new_version, next_version
from tritonkit.model_config import ModelConfig


@dataclass(frozen=True)
class Step:
    """One ensemble step: the model it runs, its inputs and outputs mapped to the ensemble's tensors."""

    model: str
    inputs: dict[str, str] = field(default_factory=dict)  # the step model's input -> ensemble tensor
    outputs: dict[str, str] = field(default_factory=dict)  # the step model's output -> ensemble tensor


def ensemble_pbtxt(config: ModelConfig, steps: list[Step]) -> str:
    """config.pbtxt text of the ensemble `config` (platform "ensemble") running `steps`, latest versions."""
    msg = config.to_proto()
    for step in steps:
        added = msg.ensemble_scheduling.step.add(model_name=step.model, model_version=-1)
        for key, value in step.inputs.items():
            added.input_map[key] = value
        for key, value in step.outputs.items():
            added.output_map[key] = value
    return pbtxt.dump(msg)


@contextmanager
def new_versions(dirs: list[Path], version: int | None, replace: bool) -> Iterator[tuple[int, list[Path]]]:
    """Yield (version, one scratch folder per model folder): `repository.new_version` for several models at once.

    All get the same number: the next one free in all of them unless `version` pins it. On success each
    scratch folder becomes its model's version folder; a failure removes the model folders this call
    created and restores each config.pbtxt that was there before, so the repository is as it was.
    """
    number = version if version is not None else max(next_version(d) for d in dirs)
    created = [d for d in dirs if not d.exists()]
    configs = {d: pbtxt.config_path(d).read_bytes() for d in dirs if pbtxt.config_path(d).is_file()}
    try:
        with ExitStack() as stack:
            yield number, [stack.enter_context(new_version(d, number, replace=replace))[1] for d in dirs]
    except BaseException:
        for d in reversed(created):
            shutil.rmtree(d, ignore_errors=True)
        for d, text in configs.items():
            if pbtxt.config_path(d).read_bytes() != text:
                pbtxt.write_text(d, text.decode("utf-8"))
        raise
