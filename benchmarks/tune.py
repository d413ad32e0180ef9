"""`tritonkit tune`: sweep a model's config for real time or bulk, write the winner, report the gain.

    python -m tritonkit.benchmarks.tune --model NAME -r REPO --profile realtime|bulk|both
        [--p99-budget-ms 20] [--max-minutes 10] [--quick] [--data FILE] [--out DIR]

- realtime: the highest throughput whose p99 stays within the budget (perf_analyzer, single-row gRPC
  requests, rising concurrency), over instance count x onnxruntime threads x max queue delay x
  preferred batch sizes. The winner becomes NAME's own config.pbtxt (the previous one is kept in the
  report folder): real-time callers keep calling NAME.
- bulk: the highest rows/s through `tritonkit score` end to end, over instance count x threads x
  max_batch_size (= rows per request) x requests in flight. The winner is written as a second model,
  NAME_bulk, beside the real-time one (same version files, its own config): `score --model NAME_bulk
  --concurrency N` uses it while NAME keeps its real-time config, and the Helm chart's batch Job
  targets NAME_bulk. An ensemble is tuned through its heaviest onnxruntime member (NAME_bulk is then
  an ensemble of the other members and the tuned one).
The starting config is measured first and again beside the winner at the end (alternating, so drift
on a shared machine hits both): the gain printed is that side-by-side ratio.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tritonkit.benchmarks import tune_grid
from tritonkit.benchmarks.tune_grid import Candidate, describe
from tritonkit.benchmarks.tune_measure import Target, Trials
from tritonkit.benchmarks.tune_sweep import Sweep
from tritonkit.benchmarks.tune_write import write_winner
from tritonkit.errors import UsageError
from tritonkit.model_config import ModelConfig

logger = logging.getLogger(__name__)

PROFILE_CHOICES = ("realtime", "bulk", "both")
ENGINES = ("auto", "model-analyzer", "kit")


@dataclass
class TuneOptions:
    """One `tune` run; validated on construction (UsageError names the flag)."""

    model: str
    repository: Path
    profile: str = "both"
    p99_budget_ms: float = 20.0
    max_minutes: float = 10.0
    quick: bool = False
    data: Path | None = None  # rows for the bulk sweep (Parquet/CSV); default: synthesized from the metadata
    maps: list[str] = field(default_factory=list)  # score's --map, for --data whose columns are named otherwise
    out: Path | None = None  # report folder; default tune-out/NAME
    write: bool = True  # write the winner into the repository
    grid: dict[str, list[Candidate]] | None = None  # a profile's candidates instead of the built-in grid (tests)
    levels: tuple[int, ...] | None = None  # realtime concurrency levels instead of the built-in ones
    rows: int | None = None  # bulk rows to synthesize instead of sizing them to ~2-5 s per run
    min_gain: float = 1.0  # write the winner only when it beat the start by this much side by side
    engine: str = "auto"  # realtime sweep: model-analyzer (Triton's), kit (perf_analyzer here), auto

    def __post_init__(self):
        self.repository = Path(self.repository)
        self.out = Path(self.out) if self.out else Path("tune-out") / self.model
        if self.engine not in ENGINES:
            raise UsageError(f"--engine is {self.engine!r}; expected one of {', '.join(ENGINES)}")
        if self.profile not in PROFILE_CHOICES:
            raise UsageError(f"--profile is {self.profile!r}; expected one of {', '.join(PROFILE_CHOICES)}")
        if not self.p99_budget_ms > 0 or not self.max_minutes > 0:
            raise UsageError(
                f"--p99-budget-ms {self.p99_budget_ms} and --max-minutes {self.max_minutes}: expected values above 0"
            )
        if not (self.repository / self.model / "config.pbtxt").is_file():
            raise UsageError(f"--model {self.model}: {self.repository / self.model / 'config.pbtxt'} does not exist")

    @property
    def profiles(self) -> tuple[str, ...]:
        return tune_grid.PROFILES if self.profile == "both" else (self.profile,)


def _environment() -> dict:
    return {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cores": os.cpu_count(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }


def tune(options: TuneOptions, log=logger.info) -> dict:
    """Runs the sweep(s), writes the winner(s) and the report; returns the summary (also in tune.json)."""
    from tritonkit.benchmarks.tune_report import write_report

    started = time.perf_counter()
    deadline = started + options.max_minutes * 60
    target = Target.find(options.repository, options.model)
    base = ModelConfig.read(options.repository / target.tuned)
    options.out.mkdir(parents=True, exist_ok=True)
    summary = {"model": options.model, "tuned_model": target.tuned, "options": _options_dict(options)}
    summary["environment"] = _environment()
    summary["start_config"] = describe(base).to_dict()
    summary["profiles"] = {}
    with (
        tempfile.TemporaryDirectory(prefix="tritonkit-tune-") as tmp,
        Trials(options.repository, target, Path(tmp)) as trials,
    ):
        for index, profile in enumerate(options.profiles):
            share = (deadline - time.perf_counter()) / (len(options.profiles) - index)
            sweep = Sweep(profile, options, trials, base, Path(tmp), log)
            result = sweep.run(time.perf_counter() + share)
            if result.get("best_is_start") and options.min_gain > 0:
                result["kept_start"] = "the starting config measured best of every config tried: nothing written"
            elif options.write and result["winner"] is not None:
                gain = 1.0 if result.get("best_is_start") else (result.get("confirm") or {}).get("gain") or 0
                if gain >= options.min_gain:
                    result["written"] = write_winner(profile, options, target, base, _candidate(result["winner"]))
                else:
                    result["written"] = ""
                    result["kept_start"] = "the winner did not beat the starting config side by side: nothing written"
            summary["profiles"][profile] = result
        summary["load_s"] = [round(s, 2) for s in trials.load_s]
        summary["restart_s"] = round(trials.restart_s(), 2)
    summary["environment"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    write_report(summary, options.out)
    return summary


def _candidate(data: dict) -> Candidate:
    fields = {k: v for k, v in data.items() if k != "label"}
    fields["preferred_batch_sizes"] = tuple(fields.get("preferred_batch_sizes") or ())
    return Candidate(**fields)


def _options_dict(options: TuneOptions) -> dict:
    return {
        "profile": options.profile,
        "p99_budget_ms": options.p99_budget_ms,
        "max_minutes": options.max_minutes,
        "quick": options.quick,
        "data": str(options.data) if options.data else None,
        "repository": str(options.repository),
        "out": str(options.out),
        "engine": options.engine,
        "rows": options.rows,
    }


def gain_lines(summary: dict) -> list[str]:
    """One line per profile: the winner, the starting config, and the side-by-side gain."""
    lines = []
    for profile, result in summary["profiles"].items():
        unit = "rows/s" if profile == "bulk" else "infer/s within p99 budget"
        confirm = result.get("confirm") or {}
        if result["winner"] is None:
            lines.append(f"{profile}: no config met the budget ({result.get('stopped', '')})")
            continue
        if result.get("best_is_start"):
            lines.append(f"{profile}: the starting config ({result['start']['label']}) measured best: gain 1.00x")
            continue
        lines.append(
            f"{profile}: {result['winner']['label']} -> {confirm.get('winner', 0):,.0f} {unit} against "
            f"{confirm.get('start', 0):,.0f} for the starting config ({result['start']['label']}): "
            f"gain {confirm.get('gain') or 0:.2f}x"
            + (f"; wrote {result['written']}" if result.get("written") else f"; {result.get('kept_start', '')}")
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tritonkit.benchmarks.tune", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("-r", "--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--profile", default="both", choices=PROFILE_CHOICES)
    parser.add_argument("--p99-budget-ms", type=float, default=20.0)
    parser.add_argument("--max-minutes", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--engine", default="auto", choices=ENGINES)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = TuneOptions(
        model=args.model,
        repository=args.repository,
        profile=args.profile,
        p99_budget_ms=args.p99_budget_ms,
        max_minutes=args.max_minutes,
        quick=args.quick,
        data=args.data,
        out=args.out,
        engine=args.engine,
    )
    summary = tune(options, log=print)
    print("\n".join(gain_lines(summary)))
    print(f"report: {options.out}/report.md, tune.json, throughput_vs_p99.png ({summary['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
