"""The `econsg` command line: run stages, inspect artifacts, check params, audit, query, edit, export."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from econsg.errors import ConfigError, EconsgError

app = typer.Typer(
    help="econsg: open-vocabulary 3D semantic Gaussian Splatting (econSG) as a staged DVC pipeline.",
    pretty_exceptions_show_locals=False,
    no_args_is_help=True,
    add_completion=False,
)
params_app = typer.Typer(help="Validate params files.", no_args_is_help=True)
export_app = typer.Typer(help="Export trained Gaussians.", no_args_is_help=True)
app.add_typer(params_app, name="params")
app.add_typer(export_app, name="export")

ParamsOption = Annotated[Path, typer.Option("--params", "-p", help="params.yaml to read.")]


def report_error(error: EconsgError) -> None:
    """Print a user error on stderr without a traceback: config errors one `section.field: message` a line."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if isinstance(error, ConfigError):
        err.print(f"[bold red]error:[/] {error.source}: invalid params", markup=True)
        for line in error.lines:
            err.print(line, markup=False)
    else:
        err.print("[bold red]error:[/] ", end="", markup=True)
        err.print(str(error), markup=False)


def _guard(func, *args, **kwargs):
    try:
        return func(*args, **kwargs)
    except EconsgError as error:
        report_error(error)
        raise typer.Exit(1) from None


@app.command()
def run(
    stage: Annotated[str, typer.Argument(help="Stage name: synth, ingest, extract, crr, fuse, autoencode, splat, evaluate.")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Run one stage directly (what `python -m stages.STAGE` and `dvc repro` run)."""
    from econsg.pipeline import run_stage

    seconds = _guard(run_stage, stage, params)
    Console(stderr=True).print(f"{stage}: done in {seconds:.1f} s")


@params_app.command("check")
def params_check(path: Annotated[Path, typer.Argument(help="params file")] = Path("params.yaml")) -> None:
    """Validate a params file; errors print as `section.field: message` and exit 1."""
    from econsg.config import load_params

    _guard(load_params, path)
    Console().print(f"{path}: ok")


@app.command()
def inspect(path: Annotated[Path, typer.Argument(help="A Zarr store written by a stage.")]) -> None:
    """Show a store's arrays (shape, dtype, chunks, size) and its provenance."""
    from econsg.artifacts import describe_store

    if not (path / "zarr.json").is_file():
        report_error(EconsgError(f"{path}: not a Zarr v3 store (no zarr.json)"))
        raise typer.Exit(1)
    rows, provenance = describe_store(path)
    console = Console()
    table = Table(title=str(path))
    for column in ("array", "dims", "shape", "dtype", "chunks", "shards", "stored"):
        table.add_column(column, justify="right" if column == "stored" else "left")
    for row in rows:
        table.add_row(
            row["name"],
            " ".join(row["dims"]),
            "x".join(map(str, row["shape"])),
            row["dtype"],
            "x".join(map(str, row["chunks"])),
            "x".join(map(str, row["shards"])) if row["shards"] else "-",
            _human_bytes(row["stored_bytes"]),
        )
    console.print(table)
    prov = Table(title="provenance (econsg)", show_header=False)
    prov.add_column("key", style="bold")
    prov.add_column("value")
    if provenance is None:
        prov.add_row("-", "none: not written by econsg")
    else:
        for key, value in provenance.items():
            if key == "params":
                for section, values in value.items():
                    prov.add_row(f"params.{section}", _short(values))
            elif key == "inputs":
                for input_path, digest in value.items():
                    prov.add_row(f"input {input_path}", digest[:16])
            else:
                prov.add_row(key, str(value))
    console.print(prov)


def _short(value: object, limit: int = 160) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except EconsgError as error:  # errors raised outside a guarded command
        report_error(error)
        sys.exit(1)


if __name__ == "__main__":
    main()
