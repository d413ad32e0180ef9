"""`tritonkit tune` on a tiny grid against the real embedded server (never timings): the configs it writes are
valid and load, the report is well-formed, the winner is the best of what was measured."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from tritonkit.benchmarks import perf_analyzer, tune_analyzer
from tritonkit.benchmarks.tune import TuneOptions, gain_lines, tune
from tritonkit.benchmarks.tune_grid import Candidate, apply, describe
from tritonkit.clients import TritonClient
from tritonkit.model_config import ModelConfig
from tritonkit.server import EmbeddedServer

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tuned(churn_repository, tmp_path_factory):
    """One tune run of both profiles over two candidates each; (repository, report folder, summary)."""
    repository = tmp_path_factory.mktemp("tune-repo")
    shutil.copytree(churn_repository / "churn", repository / "churn")
    profile = "both" if perf_analyzer.find() else "bulk"
    options = TuneOptions(
        model="churn",
        repository=repository,
        profile=profile,
        p99_budget_ms=500,
        quick=True,
        out=tmp_path_factory.mktemp("tune-out"),
        grid={
            "realtime": [Candidate(1, 1, 200)],
            "bulk": [Candidate(1, 1, 0, (), 1024, 2), Candidate(1, 1, 0, (), 1024, 4)],
        },
        levels=(1, 2),
        rows=3000,
        min_gain=0.0,  # write the winner whatever the side-by-side ratio says: the test checks what is written
        engine="kit",
    )
    start = ModelConfig.read(repository / "churn")
    summary = tune(options, log=lambda _: None)
    return repository, options.out, summary, start


def test_tune_picks_the_best_measured_config_when_sweeping_a_tiny_grid(tuned):
    _, _, summary, start = tuned
    for profile, result in summary["profiles"].items():
        assert result["trials"][0]["candidate"]["label"] == describe(start, 4 if profile == "bulk" else None).label
        measured = [t for t in result["trials"] if "error" not in t]
        assert len(measured) == len(result["trials"]), [t.get("error") for t in result["trials"]]
        best = max(measured, key=lambda t: t["throughput"])
        assert result["winner"]["label"] == best["candidate"]["label"]
        if not result.get("best_is_start"):  # a winner other than the start is confirmed side by side
            assert set(result["confirm"]["runs"]) == {"start", "winner"}
    bulk = summary["profiles"]["bulk"]
    assert [t["rows"] for t in bulk["trials"]] == [3000] * 3
    assert {t["candidate"]["in_flight"] for t in bulk["trials"][1:]} == {2, 4}


def test_tune_writes_report_json_and_plot_when_done(tuned):
    _, out, summary, _ = tuned
    on_disk = json.loads((out / "tune.json").read_text())
    assert on_disk["model"] == "churn" and set(on_disk["profiles"]) == set(summary["profiles"])
    assert on_disk["environment"]["load_average_start"] and on_disk["load_s"]
    report = (out / "report.md").read_text()
    assert report.startswith("# tritonkit tune: churn")
    for profile in summary["profiles"]:
        assert f"## {profile}" in report and "| config |" in report and "**Winner:" in report
    assert (out / "throughput_vs_p99.png").read_bytes()[:8] == PNG
    lines = gain_lines(summary)
    assert len(lines) == len(summary["profiles"]) and all(re.search(r": gain \d+\.\d\dx", line) for line in lines)


def test_tune_writes_configs_that_load_and_serve_when_winners_are_written(tuned, churn_rows):
    repository, out, summary, start = tuned
    bulk = ModelConfig.read(repository / "churn_bulk")
    winner = summary["profiles"]["bulk"]["winner"]
    assert bulk.name == "churn_bulk" and bulk.max_batch_size == winner["max_batch_size"]
    assert sorted(p.name for p in (repository / "churn_bulk").iterdir()) == ["1", "config.pbtxt"]
    if "realtime" in summary["profiles"]:
        realtime = ModelConfig.read(repository / "churn")
        chosen = summary["profiles"]["realtime"]["winner"]
        expected = start if chosen["label"] == describe(start).label else apply(_candidate(chosen), start)
        assert realtime == expected
        assert ModelConfig.read(out / "previous-config-churn.pbtxt") == start
    with EmbeddedServer(repository, http_port=0, grpc_port=0, metrics_port=0) as server:
        with TritonClient(server.grpc_url) as client:
            for model in ("churn", "churn_bulk"):
                values, _, _ = client.infer_arrays(model, {k: v[:8] for k, v in churn_rows.items()})
                assert values["probability"].shape == (8, 1) and np.isfinite(values["probability"]).all()


def _candidate(data: dict) -> Candidate:
    fields = {k: v for k, v in data.items() if k != "label"}
    fields["preferred_batch_sizes"] = tuple(fields["preferred_batch_sizes"])
    return Candidate(**fields)


@pytest.mark.skipif(
    tune_analyzer.find() is None or perf_analyzer.find() is None,
    reason="model-analyzer (pip install 'tritonkit[tune]') and perf_analyzer (scripts/ensure-perf-analyzer.sh) needed",
)
def test_tune_drives_model_analyzer_and_keeps_its_reports_when_engine_is_model_analyzer(churn_repository, tmp_path):
    repository = tmp_path / "repository"
    shutil.copytree(churn_repository / "churn", repository / "churn")
    options = TuneOptions(
        model="churn",
        repository=repository,
        profile="realtime",
        p99_budget_ms=500,
        quick=True,
        out=tmp_path / "out",
        grid={"realtime": [Candidate(1, 1)]},
        levels=(1,),
        engine="model-analyzer",
        write=False,
    )
    summary = tune(options, log=lambda _: None)
    result = summary["profiles"]["realtime"]
    assert result["engine"] == "model-analyzer"
    assert {t["candidate"]["instances"] for t in result["trials"]} == {1, 2}  # the start (2) and the candidate (1)
    assert result["trials"][0]["default"] and result["trials"][0]["candidate"]["label"] == result["start"]["label"]
    best = max(result["trials"], key=lambda t: t["throughput"])
    assert result["winner"]["label"] == best["candidate"]["label"]
    folder = options.out / "model_analyzer"
    assert (folder / "results" / "metrics-model-inference.csv").is_file() and (folder / "config.yaml").is_file()
    assert list((folder / "reports" / "summaries").rglob("*.html"))
    assert "model_analyzer" in (options.out / "report.md").read_text()
