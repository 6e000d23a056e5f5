"""The `partseg` command line: a thin typer layer that turns options into stage calls.

Each command opens the workspace, picks the shapes, calls its stage module's ``run``
and prints a one-line summary per stage. User-fixable problems (PartsegError) become
one line on stderr and exit code 2; shapes that fail inside a stage are listed at the
end and the exit code is 1.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import click
import typer

from . import __version__
from .errors import PartsegError
from .pipeline import StageReport

app = typer.Typer(
    name="partseg",
    help="Zero- and few-shot 3D part segmentation: render shapes, ask a 2D teacher where "
         "the parts are, lift and distil its answers into 3D. Every stage reads and writes "
         "one workspace (--work / WORK) and skips work whose inputs did not change.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

Work = Annotated[Path, typer.Argument(help="Workspace folder (made by `partseg render`).",
                                      show_default=False)]
Shapes = Annotated[list[str] | None, typer.Option(
    "--shape-id", help="Only these shape ids (glob patterns allowed; repeatable).")]
Force = Annotated[bool, typer.Option("--force", help="Recompute even if the stored "
                                     "output's inputs and parameters are unchanged.")]
Device = Annotated[str, typer.Option(help="Torch device: auto (CUDA when present), cpu, "
                                     "cuda, cuda:1, ...")]
Seed = Annotated[int, typer.Option(help="Random seed; equal seeds give equal results.")]


def finish(reports: list[StageReport]) -> None:
    """Print what each stage did; list failed shapes and exit 1 if there were any."""
    failed: dict[str, str] = {}
    for report in reports:
        typer.echo(report.summary(), err=True)
        for shape_id, problem in report.failed.items():
            failed.setdefault(shape_id, f"{report.stage}: {problem}")
    if failed:
        typer.echo(f"{len(failed)} shape(s) failed:", err=True)
        for shape_id, problem in failed.items():
            typer.echo(f"  {shape_id}: {problem}", err=True)
        raise typer.Exit(1)


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"partseg {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=version_callback,
                                          is_eager=True, help="Print the version.")] = False,
) -> None:
    """partseg command line."""


def main() -> None:
    """Console entry point: one-line errors, meaningful exit codes, never a traceback
    for a problem the user can fix."""
    try:
        result = app(standalone_mode=False)
    except PartsegError as exc:
        typer.echo(f"partseg: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        typer.echo("partseg: interrupted (finished outputs are kept; rerun to resume)",
                   err=True)
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)


def _floats(text: str | None, option: str) -> list[float] | None:
    if not text:
        return None
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError as exc:
        raise PartsegError(f"{option}: expected comma-separated numbers, got {text!r}") from exc


@app.command()
def render(
    inputs: Annotated[list[Path], typer.Argument(
        help="Mesh or point-cloud files, or dataset folders (PartNetE, ShapeNetPart, "
             "LabeledDB/PSB, PartNet-Mobility, or any folder of shape files).",
        show_default=False)],
    work: Annotated[Path, typer.Option("--work", "-w", help="Workspace folder to create "
                                       "or update.")],
    views: Annotated[int, typer.Option(help="Number of views; 10 gives the PartSLIP "
                                       "reference cameras.")] = 10,
    resolution: Annotated[int, typer.Option(help="Image width and height in pixels.")] = 800,
    elevations: Annotated[str | None, typer.Option(
        help="Comma-separated camera elevations in degrees (one per view).")] = None,
    azimuths: Annotated[str | None, typer.Option(
        help="Comma-separated camera azimuths in degrees (one per view).")] = None,
    points: Annotated[int, typer.Option(help="Points sampled from each mesh.")] = 10000,
    radius: Annotated[float, typer.Option(help="Splat radius of a point (normalised "
                                          "units) when rendering point clouds.")] = 0.005,
    png: Annotated[Path | None, typer.Option(help="Also write every view as PNG here.")] = None,
    backend: Annotated[str | None, typer.Option(
        help="Store backend of a new workspace: zarr (default) or hdf5.")] = None,
    seed: Seed = 0,
    device: Device = "auto",
    force: Force = False,
) -> None:
    """Load shapes into the workspace and render each from several views."""
    from . import render as render_stage
    from .pipeline import resolve_device
    from .shapes import discover
    from .store import Workspace

    config = render_stage.RenderConfig(
        n_views=views, resolution=resolution, elevations=_floats(elevations, "--elevations"),
        azimuths=_floats(azimuths, "--azimuths"), n_points=points, point_radius=radius,
        seed=seed, device=resolve_device(device), png_dir=png)
    for count, option in ((config.elevations, "--elevations"), (config.azimuths, "--azimuths")):
        if count is not None and len(count) != views:
            raise PartsegError(f"{option}: {len(count)} values given for {views} views")
    sources, problems = [], []
    for path in inputs:
        found, bad = discover(path)
        sources.extend(found)
        problems.extend(bad)
    seen: dict[str, Path] = {}
    for source in sources:
        if source.shape_id in seen and seen[source.shape_id] != source.path:
            raise PartsegError(f"{source.path}: shape id {source.shape_id!r} is also used by "
                               f"{seen[source.shape_id]}; render them into separate workspaces")
        seen[source.shape_id] = source.path
    if not sources:
        details = "; ".join(f"{p}: {m}" for p, m in problems[:3])
        raise PartsegError(f"no usable shapes found in {', '.join(map(str, inputs))}"
                           + (f" ({details})" if details else ""))
    workspace = Workspace.open(work, create=True, backend=backend)
    loaded = render_stage.ingest(workspace, sources, points, seed, force)
    for path, problem in problems:
        loaded.failed[Path(path).name] = f"{path}: {problem}"
    ok = [s.shape_id for s in sources if s.shape_id not in loaded.failed]
    rendered = render_stage.run(workspace, ok, config, force)
    finish([loaded, rendered])


@app.command()
def inspect(work: Work) -> None:
    """Show what the workspace holds: per shape, each stage's key, age and settings."""
    from .inspect import describe
    from .store import Workspace

    typer.echo(describe(Workspace.open(work)))
