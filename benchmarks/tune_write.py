"""Where `tritonkit tune` writes its winner: NAME's own config (real time) or a second model NAME_bulk (bulk).

Real time keeps the model's name (callers do not change) and replaces its config.pbtxt; the previous
text is kept in the report folder. Bulk becomes NAME_bulk beside it, the same version files with the
bulk config, so that one server (or the Helm chart's Deployment) serves both and the batch job names
NAME_bulk. For an ensemble, NAME_bulk is a copy of the ensemble whose tuned member is NAME_bulk's own.
"""

from __future__ import annotations

from pathlib import Path

from tritonkit import atomic, pbtxt
from tritonkit.benchmarks.tune_grid import Candidate, apply
from tritonkit.benchmarks.tune_measure import Target, copy_model
from tritonkit.model_config import ModelConfig

BULK_SUFFIX = "_bulk"


def bulk_names(target: Target) -> tuple[str, str]:
    """(served name, tuned member name) of the bulk twin: NAME_bulk, and NAME_bulk_encoder for NAME_encoder."""
    served = target.served + BULK_SUFFIX
    if target.tuned == target.served:
        return served, served
    if target.tuned.startswith(target.served):
        return served, served + target.tuned[len(target.served) :]
    return served, f"{served}_{target.tuned}"


def write_winner(profile: str, options, target: Target, base: ModelConfig, winner: Candidate) -> str:
    """Writes the winning config into the repository; returns what was written, for people."""
    repository = options.repository
    if profile == "realtime":
        folder = repository / target.tuned
        previous = options.out / f"previous-config-{target.tuned}.pbtxt"
        atomic.write_text(previous, (folder / "config.pbtxt").read_text())
        apply(winner, base).write(folder)
        return f"{folder / 'config.pbtxt'} (previous config kept as {previous})"
    served, tuned = bulk_names(target)
    copy_model(repository / target.tuned, repository / tuned)
    apply(winner, base, name=tuned).write(repository / tuned)
    if served != tuned:
        copy_model(repository / target.served, repository / served)
        _retarget_ensemble(repository / served, served, target.tuned, tuned)
    return f"{repository / served} (score --model {served} --concurrency {winner.in_flight or 4})"


def _retarget_ensemble(folder: Path, name: str, member: str, replacement: str) -> None:
    """The ensemble config in `folder`, renamed `name`, with its step on `member` sent to `replacement`."""
    message = pbtxt.parse(pbtxt.read_text(folder)[1])
    message.name = name
    for step in message.ensemble_scheduling.step:
        if step.model_name == member:
            step.model_name = replacement
    pbtxt.write_text(folder, pbtxt.dump(message))
