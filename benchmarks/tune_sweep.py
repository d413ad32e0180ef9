"""One profile's sweep: the starting config, every candidate within the time left, the winner, and a
side-by-side confirmation of winner against start (alternating, so drift on a shared machine hits both)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from tritonkit.benchmarks import tune_grid
from tritonkit.benchmarks.tune_grid import Candidate, apply, describe
from tritonkit.benchmarks.tune_measure import MAX_ROWS, PROBE_ROWS, bulk_point, realtime_point, write_bulk_data
from tritonkit.errors import ServerError, TritonKitError

DEFAULT_IN_FLIGHT = 4  # score's default --concurrency: what a user gets without tuning


class Sweep:
    """Measures candidates of one profile ("realtime" or "bulk") on `trials` (a scratch server)."""

    def __init__(self, profile: str, options, trials, base, workdir: Path, log):
        self.profile, self.options, self.trials, self.base, self.log = profile, options, trials, base, log
        self.workdir = workdir / profile
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.loaded = None  # server_key of the config loaded now
        self.served = trials.target.served
        self.start = describe(base, in_flight=DEFAULT_IN_FLIGHT if profile == "bulk" else None)

    # ------------------------------------------------------------ candidates and measurements

    def candidates(self) -> list[Candidate]:
        if self.options.grid and self.profile in self.options.grid:
            chosen = list(self.options.grid[self.profile])
        elif self.profile == "realtime":
            chosen = tune_grid.realtime_grid(self.options.quick)
        else:
            chosen = tune_grid.bulk_grid(self.options.quick, self.kind == "tabular")
        if self.served != self.trials.target.tuned:  # an ensemble's member cannot take less than the ensemble
            chosen = list(dict.fromkeys(replace(c, max_batch_size=self.start.max_batch_size) for c in chosen))
        chosen = [c for c in chosen if c != self.start]
        return sorted(chosen, key=lambda c: str(c.server_key))  # bulk: candidates sharing a config share a load

    def _load(self, candidate: Candidate) -> float:
        if self.loaded == candidate.server_key:
            return 0.0
        self.loaded = None
        starting = candidate.server_key == self.start.server_key
        seconds = self.trials.load(self.base if starting else apply(candidate, self.base))
        self.loaded = candidate.server_key
        return seconds

    def measure(self, candidate: Candidate) -> dict:
        """Loads the candidate's config (when it differs from the loaded one) and measures it."""
        record = {"candidate": candidate.to_dict()}
        try:
            record["load_s"] = round(self._load(candidate), 2)
            started = time.perf_counter()
            if self.profile == "realtime":
                folder = self.workdir / f"pa-{len(list(self.workdir.glob('pa-*')))}"
                folder.mkdir()
                record |= realtime_point(self.binary, self.trials.url, self.served, self.input_data, folder, self.pa)
            else:
                record |= bulk_point(self.trials.url, self.served, self.data, candidate, self.workdir, self.maps)
            record["measure_s"] = round(time.perf_counter() - started, 2)
        except (TritonKitError, ServerError) as e:  # a config Triton refuses, or a run that failed: recorded
            record |= {"throughput": 0.0, "p99_ms": None, "error": str(e)[:500]}
        self.log(
            f"  {self.profile} {candidate.label}: {record['throughput']:,.0f} "
            f"{'rows/s' if self.profile == 'bulk' else 'infer/s'}, p99 {record.get('p99_ms')} ms"
            + (f" ({record['error'][:120]})" if "error" in record else "")
        )
        return record

    # ------------------------------------------------------------ preparation

    def prepare(self) -> None:
        """perf_analyzer and its input rows (realtime), or the rows score reads (bulk), sized to the model."""
        from tritonkit.clients.realtime import TritonClient

        self._load(self.start)
        with TritonClient(self.trials.url) as client:
            self.meta = client.metadata(self.served)
        self.kind = "text" if any(t.datatype == "BYTES" for t in self.meta.inputs) else "tabular"
        if self.profile == "realtime":
            self._prepare_realtime()
        else:
            self._prepare_bulk()

    def _prepare_realtime(self) -> None:
        from tritonkit.benchmarks import perf_analyzer
        from tritonkit.benchmarks.payloads import build_payloads
        from tritonkit.errors import UsageError

        binary, why = perf_analyzer.ensure(self.log)
        if binary is None:
            raise UsageError(f"tune --profile realtime needs perf_analyzer: {why}")
        self.binary = binary
        payloads = build_payloads(self.meta, 1, None, 64, seed=5)
        self.input_data = perf_analyzer.write_input_data(payloads, self.workdir / "input_data.json")
        quick = self.options.quick
        self.pa = {
            "budget_ms": self.options.p99_budget_ms,
            "levels": self.options.levels or ((1, 4, 16) if quick else (1, 2, 4, 8, 16, 32, 64)),
            "window_ms": 1000 if quick else 2000,
            "stability": 50 if quick else 25,
            "max_trials": 4 if quick else 6,
        }

    def _prepare_bulk(self) -> None:
        self.maps = list(self.options.maps)
        if self.options.data is not None:
            self.data = Path(self.options.data)
            return
        if self.options.rows:
            self.data = write_bulk_data(self.meta, self.options.rows, self.workdir / "rows.parquet")
            return
        probe = PROBE_ROWS[self.kind]
        self.data = write_bulk_data(self.meta, probe, self.workdir / "probe.parquet")
        self._load(self.start)
        rate = bulk_point(self.trials.url, self.served, self.data, self.start, self.workdir, self.maps)["throughput"]
        seconds = 2.0 if self.options.quick else 5.0
        rows = int(min(MAX_ROWS, max(probe, rate * seconds)))
        self.log(f"  bulk data: {rows:,} synthesized rows (~{seconds:g} s per run at the starting config's rate)")
        self.data = write_bulk_data(self.meta, rows, self.workdir / "rows.parquet")

    # ------------------------------------------------------------ the sweep

    def engine(self) -> str:
        """model-analyzer for real time when asked for, or when installed (auto) and the model is no ensemble."""
        from tritonkit.benchmarks import tune_analyzer

        wanted = self.options.engine
        if self.profile != "realtime" or wanted == "kit":
            return "kit"
        plain = self.served == self.trials.target.tuned
        if wanted == "model-analyzer" or (tune_analyzer.find() and plain):
            return "model-analyzer"
        return "kit"

    def _sweep(self, deadline: float, rounds: int) -> tuple[list[dict], str]:
        trials, stopped = [self.measure(self.start)], ""
        for candidate in self.candidates():
            spent = [t.get("measure_s", 0) + t.get("load_s", 0) for t in trials]
            if time.perf_counter() + float(np.mean(spent)) * (1 + 2 * rounds) > deadline:
                stopped = f"time: {len(trials) - 1} of {len(self.candidates())} candidates measured"
                break
            trials.append(self.measure(candidate))
        return trials, stopped

    def _model_analyzer(self, deadline: float) -> list[dict]:
        """The same grid through model_analyzer (its own server, its perf_analyzer sweep); its trials."""
        from tritonkit.benchmarks import tune_analyzer
        from tritonkit.errors import UsageError

        binary = tune_analyzer.find()
        if binary is None:
            raise UsageError("--engine model-analyzer: model-analyzer is not installed (pip install 'tritonkit[tune]')")
        search = tune_analyzer._search_space([self.start, *self.candidates()], self.pa["budget_ms"], self.pa["levels"])
        workdir = self.workdir / "model_analyzer"
        settings = tune_analyzer.config(self.served, self.trials.scratch, workdir, self.binary, search)
        self.log(f"  realtime: model_analyzer over {search['model_config_parameters']}")
        timeout_s = max(120.0, 1.5 * (deadline - time.perf_counter()))  # its pace is its own: some slack
        csv_path = tune_analyzer.run(binary, settings, workdir, self.options.out, timeout_s)
        trials = tune_analyzer.trials(csv_path, workdir / "output", self.pa["budget_ms"])
        for trial in trials:
            self.log(f"  realtime {trial['candidate']['label']}: {trial['throughput']:,.0f} infer/s (model_analyzer)")
        return trials

    def run(self, deadline: float) -> dict:
        """Start, candidates while time is left (keeping enough for the confirmation), winner, confirmation."""
        self.prepare()
        rounds = 1 if self.options.quick else 2
        engine, stopped = self.engine(), ""
        if engine == "model-analyzer":
            try:
                trials = self._model_analyzer(deadline)
            except RuntimeError as e:  # it failed or ran out of time: the kit's own sweep with what is left
                self.log(f"  model_analyzer: {str(e)[:300]}; the kit's own sweep instead")
                engine = f"kit (model_analyzer: {str(e)[:200]})"
                trials, stopped = self._sweep(deadline, rounds)
        else:
            trials, stopped = self._sweep(deadline, rounds)
        best = max(trials, key=lambda t: t["throughput"])
        winner = best["candidate"] if best["throughput"] > 0 else None
        result = {"profile": self.profile, "start": self.start.to_dict(), "trials": trials, "winner": winner}
        result["stopped"] = stopped
        result["kind"] = self.kind
        result["engine"] = engine
        if winner is not None and winner["label"] == self.start.label:
            result["best_is_start"] = True  # nothing to confirm: the starting config measured best
        elif winner is not None:
            result["confirm"] = self.confirm(_from_dict(winner), rounds)
        return result

    def confirm(self, winner: Candidate, rounds: int) -> dict:
        """Start and winner measured again, alternating; the gain is the ratio of their means."""
        runs: dict[str, list[float]] = {"start": [], "winner": []}
        for r in range(rounds):
            order = (("start", self.start), ("winner", winner))
            for name, candidate in order if r % 2 == 0 else order[::-1]:
                runs[name].append(self.measure(candidate)["throughput"])
        start, best = float(np.mean(runs["start"])), float(np.mean(runs["winner"]))
        return {"runs": runs, "start": start, "winner": best, "gain": best / start if start else None}


def _from_dict(data: dict) -> Candidate:
    fields = {k: v for k, v in data.items() if k != "label"}
    fields["preferred_batch_sizes"] = tuple(fields.get("preferred_batch_sizes") or ())
    return Candidate(**fields)
