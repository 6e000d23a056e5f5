"""The `partseg` command line: a thin typer layer that turns options into stage calls.

Each command opens the workspace, picks the shapes, calls its stage module's ``run``
and prints a one-line summary per stage. User-fixable problems (PartsegError) become
one line on stderr and exit code 2; shapes that fail inside a stage are listed at the
end and the exit code is 1.
"""

from __future__ import annotations

import functools
import re
import sys
import warnings
from collections.abc import Callable
from inspect import Parameter, signature
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from . import __version__, batch
from .errors import InputError, PartsegError, WriteError, first_line, os_error_line
from .help_text import EXAMPLES
from .options import check_every_command
from .pipeline import StageReport

if TYPE_CHECKING:
    from .distill import DistillConfig
    from .shapes import ShapeSource
    from .store import Workspace

T = TypeVar("T")

app = typer.Typer(
    name="partseg",
    help="Zero- and few-shot 3D part segmentation: render shapes, ask a 2D teacher where "
         "the parts are, lift and distil its answers into 3D. Every stage reads and writes "
         "one workspace (--work / WORK) and skips work whose inputs did not change.",
    invoke_without_command=True,  # bare `partseg` gets one line from root(), not a traceback
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=EXAMPLES["partseg"],
)

Work = Annotated[Path, typer.Argument(help="Workspace folder (made by `partseg render`).",
                                      show_default=False)]
Shapes = Annotated[list[str] | None, typer.Option(
    "--shape-id", help="Only these shape ids (glob patterns allowed; repeatable).")]
Shard = Annotated[str | None, typer.Option(
    help="Only shard K of N (K/N, K from 0): every N-th shape in sorted order, e.g. "
         "--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT.")]
Force = Annotated[bool, typer.Option("--force", help="Recompute even if the stored "
                                     "output's inputs and parameters are unchanged.")]
def _check_device(value: str) -> str:
    """A --device the stages can use, checked before any work (one line otherwise)."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise typer.BadParameter(f"{value!r} is not a device; use auto, cpu, cuda, cuda:N or "
                                 "mps")
    return value


Device = Annotated[str, typer.Option(help="Torch device: auto (CUDA when present), cpu, "
                                     "cuda, cuda:1, ...", callback=_check_device)]
Seed = Annotated[int, typer.Option(help="Random seed; equal seeds give equal results.")]


MAX_NOTE_LINES = 10  # per stage, of per-shape counts and of warnings


def finish(reports: list[StageReport]) -> None:
    """Print what each stage did; list failed shapes and exit 1 if there were any, 2 if
    no shape was usable (a lone failed shape is then one error line)."""
    failed: dict[str, str] = {}
    for report in reports:
        for shape_id, problem in report.failed.items():
            failed.setdefault(shape_id, f"{report.stage}: {problem}")
    done = {s for r in reports for s in r.computed + r.skipped} - failed.keys()
    if len(failed) == 1 and not done:
        raise PartsegError(next(iter(failed.values())))
    for report in reports:
        batch.log(report.summary(), always=True)
        counts = [(sid, n.counts) for sid, n in report.notes.items() if n.labelling]
        for sid, text in counts[:MAX_NOTE_LINES]:
            batch.log(f"  {sid}: {text}", always=True)
        if len(counts) > MAX_NOTE_LINES:
            batch.log(f"  ... {len(counts) - MAX_NOTE_LINES} more shapes (`partseg report` "
                      "lists them all)", always=True)
        lines = report.warning_lines()
        for line in lines[:MAX_NOTE_LINES]:
            _say(f"partseg: warning: {line}")
        if len(lines) > MAX_NOTE_LINES:
            _say(f"partseg: warning: ... and {len(lines) - MAX_NOTE_LINES} more "
                 f"{report.stage} warnings (`partseg report` lists them all)")
    if failed:
        _say(f"{len(failed)} shape(s) failed:")
        for shape_id, problem in failed.items():
            _say(f"  {shape_id}: {problem}")
        raise typer.Exit(1 if done else 2)


def _say(text: str) -> None:
    """A line on stderr that --quiet keeps (errors, failures), also into --log-file."""
    typer.echo(text, err=True)
    batch.said(text)


Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Only errors and failed shapes "
                                     "on stderr: no progress bar, log lines or summaries.")]
LogFile = Annotated[Path | None, typer.Option(
    help="Also append every progress and summary line, with a timestamp, to this file.")]


def _option(name: str, annotation: object, default: object = None) -> Parameter:
    return Parameter(name, Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


EXECUTOR_OPTIONS = (
    _option("executor", Annotated[str | None, typer.Option(
        help="Run the shapes as jobs instead: local (processes on this machine) or slurm "
             "(an sbatch job array through submitit); see `partseg status`.")]),
    _option("jobs", Annotated[int, typer.Option(
        help="With --executor: shards of one job array (each task runs --shard K/N).")], 1),
    _option("wait", Annotated[bool, typer.Option(
        "--wait", help="With --executor slurm: block until the jobs end and exit as a "
        "local run would (local always waits).")], False),
    _option("slurm_partition", Annotated[str | None, typer.Option(help="SLURM partition.")]),
    _option("slurm_time", Annotated[int, typer.Option(
        help="SLURM time limit per task in minutes.")], 60),
    _option("slurm_gres", Annotated[str | None, typer.Option(
        help="SLURM generic resources per task, e.g. gpu:1.")]),
    _option("slurm_cpus", Annotated[int | None, typer.Option(help="CPUs per task.")]),
    _option("slurm_mem", Annotated[str | None, typer.Option(
        help="Memory per task, e.g. 16G.")]),
    _option("slurm_account", Annotated[str | None, typer.Option(help="SLURM account.")]),
    _option("slurm_param", Annotated[list[str] | None, typer.Option(
        help="Any other sbatch option as KEY=VALUE, e.g. qos=high (repeatable).")]),
)
_ARGV: list[str] = []  # the command line main() parses: executors resubmit it


def shared_options(*extra: Parameter
                   ) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Add --quiet, --log-file (and the ``extra`` parameters, e.g. the executor options)
    to a command. typer reads the wrapper's signature, so one definition serves every
    command; the wrapper sets up logging and signals and hands the rest on."""
    own = [Parameter("quiet", Parameter.KEYWORD_ONLY, default=False, annotation=Quiet),
           Parameter("log_file", Parameter.KEYWORD_ONLY, default=None, annotation=LogFile),
           *extra]

    def decorate(func: Callable[..., T]) -> Callable[..., T]:
        sig = signature(func, eval_str=True)

        @functools.wraps(func)
        def wrapper(**kwargs: object) -> T:
            batch.configure(bool(kwargs.pop("quiet")), kwargs.pop("log_file"))  # type: ignore[arg-type]
            values = {p.name: kwargs.pop(p.name) for p in extra}
            if values.get("executor"):
                return _submit(values, kwargs)  # type: ignore[return-value] # an exit code
            return func(**kwargs)

        params = [p.replace(kind=Parameter.KEYWORD_ONLY)
                  for p in sig.parameters.values()]
        wrapper.__signature__ = sig.replace(parameters=params + own)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params + own}
        return wrapper

    return decorate


def _submit(values: dict[str, Any], params: dict[str, Any]) -> int:
    """Hand the command line to executors.py instead of running it here."""
    from .executors import EXECUTOR_FLAGS, EXECUTOR_VALUES, ExecOptions, strip_options, submit

    options = ExecOptions(
        executor=values["executor"], jobs=values["jobs"], wait=values["wait"],
        partition=values["slurm_partition"], time_min=values["slurm_time"],
        gres=values["slurm_gres"], cpus=values["slurm_cpus"], mem=values["slurm_mem"],
        account=values["slurm_account"], params=values["slurm_param"] or [])
    argv = strip_options(_ARGV, EXECUTOR_VALUES, EXECUTOR_FLAGS)
    if params.get("work") is None and params.get("inputs"):  # render/run: runs/<name>
        params["work"] = _default_work(params["inputs"])
        argv += ["--work", str(params["work"])]  # every task must use the same one
    if params.get("work") is None:
        raise PartsegError("--executor: give the workspace (WORK)")
    return submit(argv[0], argv, params, options, Path(params["work"]))


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"partseg {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", callback=version_callback,
                                          is_eager=True, help="Print the version.")] = False,
) -> None:
    """partseg command line."""
    if ctx.invoked_subcommand is None:
        commands = ", ".join(ctx.command.list_commands(ctx))
        raise PartsegError(f"no command given; choose one of {commands} "
                           "(see 'partseg --help')")


def _one_line_warning(message: Warning | str, category: type[Warning], *args: object,
                      **kwargs: object) -> str:
    return f"partseg: warning: {message}\n"


def _usage_line(exc: typer.TyperException) -> str:
    """One line for a usage error (bad value, missing argument, unknown option or
    command): the failing command, the problem, and where its help is."""
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "partseg"
    return f"partseg: error: {command}: {first_line(exc.format_message())} " \
           f"(see '{command} --help')"


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors, meaningful exit codes, never a traceback
    for a problem the user can fix.

    The command is parsed and invoked here rather than through typer's standalone mode,
    which prints usage blocks, turns Ctrl-C into a silent exit and, since typer 0.29
    vendors its own click, raises exceptions that ``click`` names never match. What
    typer raises is caught by its public names: Exit, Abort and TyperException (the
    base of its usage errors)."""
    warnings.formatwarning = _one_line_warning
    args = sys.argv[1:] if argv is None else list(argv)
    _ARGV[:] = args
    command = typer.main.get_command(app)
    try:
        _invoke(command, args)
    finally:
        batch.release()


def _invoke(command: typer.core.TyperGroup, args: list[str]) -> None:
    """Run the command; every outcome becomes an exit code (see main)."""
    try:
        with command.make_context("partseg", args) as ctx:
            result = command.invoke(ctx)
    except (PartsegError, WriteError) as exc:
        _say(f"partseg: error: {first_line(exc)}")
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:
        typer.echo(_usage_line(exc), err=True)
        sys.exit(2)
    except batch.Stopped as exc:
        _say(f"partseg: {exc} (stored outputs are kept; rerun to resume)")
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):  # an EOFError is a truncated file, not Ctrl-D
        typer.echo("partseg: interrupted (finished outputs are kept; rerun to resume)",
                   err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)  # the reader of our output went away (e.g. `| head`)
    except OSError as exc:  # a file the stages did not wrap: read-only folder, full disk
        typer.echo(f"partseg: error: {os_error_line(exc)}", err=True)
        sys.exit(2)
    sys.exit(result if isinstance(result, int) else 0)


def _input_ids(inputs: list[Path]) -> list[str]:
    """The shape ids found under ``inputs``, whatever the shard."""
    from .shapes import discover

    return sorted({s.shape_id for path in inputs for s in discover(path)[0]})


def _load_inputs(inputs: list[Path], work: Path, backend: str | None, points: int, seed: int,
                 force: bool, shard: str | None, patterns: list[str] | None = None
                 ) -> tuple[Workspace, list[ShapeSource], StageReport] | None:
    """Discover the shapes under ``inputs`` (restricted to a shard, and to the shape ids
    matching ``patterns`` when given) and load them into the workspace. Returns None for
    an empty shard; unusable files are listed as failures in the returned report."""
    import fnmatch

    from .render import ingest
    from .shapes import discover
    from .store import Workspace

    sources, problems = [], []
    for path in inputs:
        found, bad = discover(path)
        sources += found
        problems += bad
    if patterns:
        sources = [s for s in sources if any(fnmatch.fnmatch(s.shape_id, p) for p in patterns)]
        problems = []  # files outside the selection do not matter
        if not sources:
            raise PartsegError(f"no shape in {', '.join(map(str, inputs))} matches "
                               f"--shape-id {' '.join(patterns)}")
    sources = _in_shard(sources, shard, key=lambda s: s.shape_id)
    problems = _in_shard(problems, shard, key=lambda p: str(p[0]))
    seen: dict[str, Path] = {}
    for source in sources:
        if seen.setdefault(source.shape_id, source.path) != source.path:
            raise PartsegError(f"{source.path}: shape id {source.shape_id!r} is also used by "
                               f"{seen[source.shape_id]}; load them into separate workspaces")
    if shard and not sources and not problems:
        typer.echo(f"shard {shard}: no shapes in it", err=True)
        return None
    if not sources:
        details = "; ".join(f"{p}: {m}" for p, m in problems[:3])
        raise PartsegError(f"no usable shapes found in {', '.join(map(str, inputs))}"
                           + (f" ({details})" if details else ""))
    workspace = Workspace.open(work, create=True, backend=backend, defer=True)
    report = ingest(workspace, sources, points, seed, force)
    for path, problem in problems:
        report.failed[Path(path).name] = f"{path}: {problem}"
    if not report.computed and not report.skipped:
        finish([report])  # nothing loaded: exit 2 here, and a new workspace is not made
    return workspace, sources, report


def _default_work(inputs: list[Path]) -> Path:
    """runs/<stem of the first input> (as `distill --shape` does), announced on stderr."""
    first = Path(inputs[0]).expanduser()
    name = (first.resolve().name if first.is_dir() else first.stem) or "workspace"
    work = Path("runs") / name
    typer.echo(f"workspace: {work} (give --work to choose)", err=True)
    return work


def _floats(text: str | None, option: str) -> list[float] | None:
    if not text:
        return None
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError as exc:
        raise PartsegError(f"{option}: expected comma-separated numbers, got {text!r}") from exc


@app.command(epilog=EXAMPLES["render"])
@shared_options(*EXECUTOR_OPTIONS)
def render(
    inputs: Annotated[list[Path], typer.Argument(
        help="Mesh or point-cloud files, or dataset folders (PartNetE, ShapeNetPart, "
             "LabeledDB/PSB, PartNet-Mobility, or any folder of shape files).",
        show_default=False)],
    work: Annotated[Path | None, typer.Option(
        "--work", "-w", help="Workspace folder to create or update (default: runs/<name "
        "of the first input>).")] = None,
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
    shard: Shard = None,
    seed: Seed = 0,
    device: Device = "auto",
    force: Force = False,
) -> None:
    """Load shapes into the workspace and render each from several views."""
    from . import render as render_stage

    config = render_stage.RenderConfig(
        n_views=views, resolution=resolution, elevations=_floats(elevations, "--elevations"),
        azimuths=_floats(azimuths, "--azimuths"), n_points=points, point_radius=radius,
        seed=seed, device=device, png_dir=png)
    for count, option in ((config.elevations, "--elevations"), (config.azimuths, "--azimuths")):
        if count is not None and len(count) != views:
            raise PartsegError(f"{option}: {len(count)} values given for {views} views")
    work = work or _default_work(inputs)
    loaded = _load_inputs(inputs, work, backend, points, seed, force, shard)
    if loaded is None:
        return
    workspace, sources, ingested = loaded
    ok = [s.shape_id for s in sources if s.shape_id not in ingested.failed]
    finish([ingested, render_stage.run(workspace, ok, config, force)])


@app.command(epilog=EXAMPLES["status"])
@shared_options()
def status(
    work: Work,
    json_out: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")
                        ] = False,
    verify: Annotated[bool, typer.Option(
        help="First read every stored output whole against its checksums (slow: all "
             "the data): one 'damaged' line each, marked so that its stage recomputes "
             "it; exit 1 when any is damaged.")] = False,
) -> None:
    """Per stage: shapes done, stale, missing and failed (with reasons and logs); the
    jobs of the last --executor submission: done, failed, running, pending; leftovers
    of killed runs removed (or kept: still being written, or from another host)."""
    import json

    from .status import collect, render_text

    summary = collect(work, check=verify)
    typer.echo(json.dumps(summary, indent=1) if json_out else render_text(summary))
    if verify and (summary["verify"]["damaged"] or summary["verify"]["groups"]):
        raise typer.Exit(1)


@app.command(epilog=EXAMPLES["inspect"])
@shared_options()
def inspect(work: Work) -> None:
    """Show what the workspace holds: per shape, each stage's key, age and settings."""
    from .inspect import describe
    from .store import Workspace

    text, corrupt = describe(Workspace.open(work))
    typer.echo(text)
    if corrupt:
        typer.echo(f"{corrupt} stored output(s) corrupt; rerunning their stages "
                   "recomputes them", err=True)
        raise typer.Exit(1)


def _parts(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise PartsegError("--parts: give comma-separated part names, e.g. \"back,seat,leg\"")
    return names


def _open(work: Path, shape_ids: list[str] | None, shard: str | None = None
          ) -> tuple[Workspace, list[str]]:
    from .pipeline import select_shapes
    from .store import Workspace

    workspace = Workspace.open(work)
    return workspace, _in_shard(select_shapes(workspace, shape_ids), shard)


def _in_shard(items: list[T], shard: str | None, key: Callable[[T], str] = str) -> list[T]:
    """The items of shard K/N: every N-th item in order of ``key``, starting at K."""
    if shard is None:
        return items
    try:
        index, count = (int(v) for v in shard.split("/"))
    except ValueError as exc:
        raise PartsegError(f"--shard: expected K/N such as 3/10, got {shard!r}") from exc
    if count < 1 or not 0 <= index < count:
        raise PartsegError(f"--shard: need 0 <= K < N, got {shard!r}")
    return sorted(items, key=key)[index::count]


Png = Annotated[Path | None, typer.Option(
    help="Also write debug pictures here (as `partseg show`: per view the render with "
         "the teacher's output, labels, ground truth, errors, legend).")]


Teacher = Annotated[str, typer.Option(
    help="2D teacher: owlv2, owlvit, grounding-dino (boxes), clipseg (pixel maps); "
         "trained / trained-pixels: a per-category network made by `partseg "
         "train-teacher` (boxes / pixel maps; give its folder with --model); or "
         "simulated / simulated-pixels: a measuring instrument that turns ground-truth "
         "labels into VLM-like noisy boxes / pixel maps; it needs labelled shapes and is "
         "not a segmentation method.")]
Parts = Annotated[str | None, typer.Option(
    help="Comma-separated part names to ask for (default: the dataset's part names, "
         "else the built-in ShapeNetPart/PartNetE table for the category).")]
Category = Annotated[str | None, typer.Option(
    help="Object noun for {category} in the prompts (default: the shape's category; a "
         "single file has none, giving \"object\", a plain folder lends its name). "
         "Names are cleaned for prompting: \"StorageFurniture\" -> \"storage furniture\", "
         "\"frame_horizontal_bar\" -> \"frame horizontal bar\".")]
Prompt = Annotated[str | None, typer.Option(
    help="Prompt template of a text-prompted teacher; {part} and {category} are filled "
         "in (default \"a {part} of a {category}\"). The text sent is stored with the "
         "detections (`partseg report` shows it).")]


@app.command(epilog=EXAMPLES["detect"])
@shared_options(*EXECUTOR_OPTIONS)
def detect(
    work: Work,
    teacher: Teacher = "owlv2",
    model: Annotated[str | None, typer.Option(
        help="Hugging Face model id or local folder (default per teacher, e.g. "
             "google/owlv2-base-patch16-ensemble); for --teacher trained, the folder "
             "written by `partseg train-teacher`.")] = None,
    parts: Parts = None,
    prompt: Prompt = None,
    category: Category = None,
    threshold: Annotated[float, typer.Option(help="Box score threshold.")] = 0.1,
    preset: Annotated[str, typer.Option(help="Noise preset of the simulated teacher: "
                                        "glip-like, weak, clean; glip-like-leaky is the "
                                        "earlier one whose confidences and features leak "
                                        "ground-truth purity (for comparison only).")
                      ] = "glip-like",
    batch_size: Annotated[int, typer.Option(help="Views per forward pass.")] = 4,
    png: Png = None,
    shape_id: Shapes = None,
    shard: Shard = None,
    seed: Seed = 0,
    device: Device = "auto",
    force: Force = False,
) -> None:
    """Ask a 2D teacher where the parts are in every rendered view."""
    from . import detect as stage

    workspace, ids = _open(work, shape_id, shard)
    config = stage.DetectConfig(teacher=teacher, model=model, parts=_parts(parts),
                                prompt=prompt or stage.DEFAULT_TEMPLATE, category=category,
                                threshold=threshold, preset=preset, seed=seed,
                                batch_size=batch_size, device=device)
    report = stage.run(workspace, ids, config, force)
    if png:
        _pictures(workspace, ids, png, None, report)
    finish([report])


@app.command("sam-refine", epilog=EXAMPLES["sam-refine"])
@shared_options(*EXECUTOR_OPTIONS)
def sam_refine(
    work: Work,
    model: Annotated[str | None, typer.Option(
        help="SAM through transformers: model id or local folder (default "
             "facebook/sam-vit-base); 'grabcut' for OpenCV's GrabCut on the rendered RGB "
             "(no weights); or 'sam-oracle' (alias 'simulated'), a measuring instrument "
             "that cuts the GROUND-TRUTH part region to each box: an upper bound, not a "
             "method.")] = None,
    checkpoint: Annotated[Path | None, typer.Option(
        help="Official segment-anything checkpoint file (e.g. sam_vit_h_4b8939.pth); "
             "needs `pip install 'partseg\\[sam]'` and torchvision.")] = None,
    model_type: Annotated[str, typer.Option(help="Architecture of --checkpoint: vit_h, "
                                            "vit_l or vit_b.")] = "vit_h",
    png: Png = None,
    shape_id: Shapes = None,
    shard: Shard = None,
    seed: Seed = 0,
    device: Device = "auto",
    force: Force = False,
) -> None:
    """Refine every detected box into a mask with SAM."""
    from . import sam_refine as stage

    workspace, ids = _open(work, shape_id, shard)
    config = stage.RefineConfig(model=model, checkpoint=str(checkpoint) if checkpoint else None,
                                model_type=model_type, seed=seed, device=device)
    report = stage.run(workspace, ids, config, force)
    if png:
        _pictures(workspace, ids, png, None, report)
    finish([report])


@app.command(epilog=EXAMPLES["superpoints"])
@shared_options(*EXECUTOR_OPTIONS)
def superpoints(
    work: Work,
    k: Annotated[int, typer.Option(help="Neighbours in the point graph.")] = 10,
    regularization: Annotated[float, typer.Option(
        help="L0 cut-pursuit regularisation (larger: fewer, bigger superpoints).")] = 0.05,
    color_weight: Annotated[float, typer.Option(
        help="Weight of RGB against normals in the point features.")] = 0.3,
    min_size: Annotated[int, typer.Option(
        help="Superpoints of at most this many points merge into a neighbour.")] = 10,
    use_shape_normals: Annotated[bool, typer.Option(
        help="Use the shape's own normals instead of re-estimating them with Open3D "
             "as PartSLIP does.")] = False,
    shape_id: Shapes = None,
    shard: Shard = None,
    force: Force = False,
) -> None:
    """Oversegment every shape into superpoints (PartSLIP's cut pursuit)."""
    from . import superpoints as stage

    workspace, ids = _open(work, shape_id, shard)
    config = stage.SuperpointConfig(k=k, regularization=regularization,
                                    color_weight=color_weight, min_size=min_size,
                                    use_shape_normals=use_shape_normals)
    finish([stage.run(workspace, ids, config, force)])


@app.command(epilog=EXAMPLES["backproject"])
@shared_options(*EXECUTOR_OPTIONS)
def backproject(
    work: Work,
    source: Annotated[str, typer.Option(
        help="What to lift: auto (SAM masks when present, else boxes or pixel maps), "
             "boxes, masks, pixels.")] = "auto",
    whole_object_fraction: Annotated[float, typer.Option(
        help="Drop boxes covering at least this fraction of the object's visible "
             "points.")] = 0.98,
    min_pixels: Annotated[int, typer.Option(
        help="Smallest pixel-map component that becomes a knowledge unit.")] = 20,
    shape_id: Shapes = None,
    shard: Shard = None,
    force: Force = False,
) -> None:
    """Lift 2D predictions onto the points as knowledge units (PartDistill Eq. 1-2)."""
    from . import backproject as stage

    workspace, ids = _open(work, shape_id, shard)
    config = stage.BackprojectConfig(source=source, whole_object_fraction=whole_object_fraction,
                                     min_pixels=min_pixels)
    finish([stage.run(workspace, ids, config, force)])


@app.command(epilog=EXAMPLES["vote"])
@shared_options(*EXECUTOR_OPTIONS)
def vote(
    work: Work,
    threshold: Annotated[float, typer.Option(
        help="A superpoint takes the best part only if its score reaches this.")] = 0.5,
    instances: Annotated[bool, typer.Option(help="Also merge superpoints into instances.")
                         ] = True,
    png: Png = None,
    shape_id: Shapes = None,
    shard: Shard = None,
    force: Force = False,
) -> None:
    """PartSLIP voting: semantic and instance labels from the knowledge units."""
    from . import vote as stage

    workspace, ids = _open(work, shape_id, shard)
    report = stage.run(workspace, ids, stage.VoteConfig(threshold, instances), force)
    if png:
        _pictures(workspace, ids, png, "vote", report)
    finish([report])


@app.command(epilog=EXAMPLES["export"])
@shared_options(*EXECUTOR_OPTIONS)
def export(
    work: Work,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    method: Annotated[str, typer.Option(help="Which stored labelling: vote, distill, "
                                        "distill.NAME, ... (`partseg inspect` lists them)")
                      ] = "vote",
    ground_truth: Annotated[bool, typer.Option(
        "--ground-truth", help="Also export the reference labelling the same way, into "
        "OUT/<shape_id>/ground-truth/.")] = False,
    shape_id: Shapes = None,
    shard: Shard = None,
) -> None:
    """Write per shape: coloured PLY/GLB (one named node per part), one file per part,
    label arrays (.npy/.txt, read back by `evaluate --pred OUT`) and a legend PNG."""
    from .atomic import check_output_folder
    from .evaluate import resolve_method
    from .export import GROUND_TRUTH, export_shape, ground_truth_labelling
    from .pipeline import StageReport, progress
    from .records import Labelling, Shape
    from .store import shape_scope

    check_output_folder(out, "--out")
    workspace, ids = _open(work, shape_id, shard)
    method = resolve_method(workspace, ids, method)  # a name stored nowhere: one line
    report = StageReport("export")
    for sid in progress(ids, desc="export"):
        try:
            scope = shape_scope(sid)
            shape = workspace.read_record(scope, "shape", Shape)
            labelling = workspace.read_record(scope, method, Labelling)
            export_shape(shape, labelling, out / sid)
            if ground_truth:
                export_shape(shape, ground_truth_labelling(shape), out / sid / GROUND_TRUTH)
            report.computed.append(sid)
        except PartsegError as exc:
            report.failed[sid] = str(exc)
    finish([report])


@app.command(epilog=EXAMPLES["show"])
@shared_options()
def show(
    work: Work,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the PNGs.")],
    shape: Annotated[list[str] | None, typer.Option(
        help="Shape id (glob patterns allowed; repeatable); default every shape.")] = None,
    method: Annotated[str, typer.Option(
        help="Stored labelling to show: vote, distill, ..., 'auto' (the most downstream "
             "one stored) or 'none'.")] = "auto",
    view: Annotated[list[int] | None, typer.Option(
        help="Only this view (repeatable); default every view.")] = None,
    size: Annotated[int, typer.Option(help="Largest panel side in pixels.")] = 400,
) -> None:
    """Debug pictures, one PNG per view: the teacher's boxes / masks / pixel maps over the
    render, the lifted labels, the ground truth and an error map, with a legend."""
    from .evaluate import resolve_method
    from .pipeline import StageReport

    workspace, ids = _open(work, shape)
    if method not in ("auto", "none"):  # a name stored nowhere: one line, not one a shape
        method = resolve_method(workspace, ids, method)
    report = StageReport("show")
    _pictures(workspace, ids, out, None if method == "none" else method, report,
              views=view, size=size)
    if report.computed:  # when every shape failed, the report's one line says why
        typer.echo(f"pictures in {out}", err=True)
    finish([report])


@app.command(epilog=EXAMPLES["report"])
@shared_options()
def report(
    work: Work,
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write (one "
                                      "self-contained page: images inline).")],
    method: Annotated[str, typer.Option(
        help="Stored labelling to show and score: vote, distill, distill.NAME, ... or "
             "'auto' (the most downstream one most shapes have).")] = "auto",
    view: Annotated[list[int] | None, typer.Option(
        help="Views shown per shape (repeatable; default 0 and 1).")] = None,
    size: Annotated[int, typer.Option(help="Largest panel side in pixels.")] = 260,
    max_pictures: Annotated[int, typer.Option(
        help="Shapes shown with pictures (the rest are scored and listed); keeps the page "
             "small enough to open.")] = 40,
    convention: Annotated[str, typer.Option(
        help="Scoring convention, as for `partseg evaluate`.")] = "shapenetpart",
    shape_id: Shapes = None,
    shard: Shard = None,
) -> None:
    """One HTML page to see into a workspace: scores and the per-part IoU table, the
    teacher's 2D diagnostics, per shape the debug sheets (teacher output, prediction,
    ground truth, errors) with a legend, its counts and warnings, and the provenance
    (stage keys, parameters, versions) of every number."""
    from .atomic import check_output_file
    from .report import write_report

    check_output_file(out, "--out")
    workspace, ids = _open(work, shape_id, shard)
    counts = write_report(workspace, ids, out, method, view, size, convention, max_pictures)
    typer.echo(f"report: {counts['shapes']} shapes, {counts['images']} images, "
               f"{counts['warnings']} warnings in {out}", err=True)


def _pictures(workspace: Workspace, ids: list[str], out: Path, method: str | None,
              report: StageReport, views: list[int] | None = None, size: int = 400) -> None:
    """Write `show` pictures for ``ids`` (those the report lists as failed are skipped)."""
    from .pipeline import progress
    from .show import shape_pictures

    for sid in progress([i for i in ids if i not in report.failed], desc="pictures"):
        try:
            shape_pictures(workspace, sid, out, method, views, size)
            if report.stage == "show":
                report.computed.append(sid)
        except PartsegError as exc:
            report.failed[sid] = str(exc) if report.stage == "show" else f"pictures: {exc}"


@app.command(epilog=EXAMPLES["evaluate"])
@shared_options()
def evaluate(
    work: Work,
    method: Annotated[str, typer.Option(
        help="Which stored labelling to score, as `partseg inspect` lists them: vote, "
             "distill, distill.NAME (after `distill --output NAME`; NAME alone works "
             "too), partstad, bipart, ...")] = "vote",
    pred: Annotated[Path | None, typer.Option(
        help="Score labels from a file instead (.npy or one integer per line; for "
             "several shapes a folder of <shape_id>.npy/.txt).")] = None,
    convention: Annotated[str, typer.Option(
        help="shapenetpart: per-shape mIoU, absent parts count 1 (PartDistill); partnete: "
             "per-part IoU over shapes containing the part (PartSLIP++).")] = "shapenetpart",
    teacher_2d: Annotated[bool, typer.Option(
        "--teacher-2d", help="Also score the teacher's own 2D predictions "
        "(confidence-weighted mIoU2D, PartDistill suppl. Eq. 5-8), before and after "
        "re-scoring when `rescore` ran, and for box teachers box precision / recall "
        "against ground-truth part components (IoU >= 0.5) and the AUROC of confidence "
        "for right vs wrong boxes (after re-scoring too).")] = False,
    json_out: Annotated[Path | None, typer.Option(
        "--json", help="Write the report as JSON here ('-': standard output, the table "
        "then goes to standard error), with per-shape rows and provenance.")] = None,
    csv_out: Annotated[Path | None, typer.Option(
        "--csv", help="Write the report as CSV here ('-': standard output), with "
        "per-shape rows and provenance.")] = None,
    shape_id: Shapes = None,
    shard: Shard = None,
) -> None:
    """Score a labelling against the ground truth: mIoU per part, category and overall."""
    import json

    from . import evaluate as stage
    from .atomic import check_output_file, write_text

    stdout = [p for p in (json_out, csv_out) if p is not None and str(p) == "-"]
    if len(stdout) > 1:
        raise PartsegError("--json - and --csv -: only one of them can go to standard output")
    for path, option in ((json_out, "--json"), (csv_out, "--csv")):
        if path is not None and str(path) != "-":
            check_output_file(path, option)  # before scoring, not after
    workspace, ids = _open(work, shape_id, shard)
    report, failed = stage.run(workspace, ids, method, pred, convention, teacher_2d)
    typer.echo(report.table(), err=bool(stdout))  # stdout is then the JSON / CSV alone
    for path, text in ((json_out, lambda: json.dumps(report.to_json(), indent=1) + "\n"),
                       (csv_out, report.to_csv)):
        if path is not None:
            if str(path) == "-":
                typer.echo(text(), nl=False)
            else:
                write_text(path, text())
    if failed:
        typer.echo(f"{len(failed)} shape(s) not scored:", err=True)
        for sid, problem in failed.items():
            typer.echo(f"  {sid}: {problem}", err=True)
        raise typer.Exit(1)


def _pipeline(inputs: list[Path], work: Path, teacher: str, model: str | None,
              parts: str | None, sam: str | None, distill_mode: str, views: int,
              resolution: int, points: int, preset: str, backend: str | None, seed: int,
              device: str, force: bool, shard: str | None = None,
              prompt: str | None = None, category: str | None = None) -> None:
    """Every stage in order over ``inputs``, cached; prints the evaluation when labelled."""
    from . import backproject as backproject_stage
    from . import detect as detect_stage
    from . import evaluate as evaluate_stage
    from . import render as render_stage
    from . import superpoints as superpoints_stage
    from . import vote as vote_stage

    if distill_mode not in ("none", "tta", "pre"):
        raise PartsegError(f"--distill: choose none, tta or pre, not {distill_mode!r}")
    # "auto" is resolved by the stages that load a model: a cached run never imports torch
    loaded = _load_inputs(inputs, work, backend, points, seed, force, shard)
    if loaded is None:
        return
    workspace, sources, first = loaded
    reports = [first]

    def alive() -> list[str]:
        dead = {sid for report in reports for sid in report.failed}
        return [s.shape_id for s in sources if s.shape_id not in dead]

    detect_stage.check_part_names(workspace, {s.shape_id: s.path for s in sources
                                              if s.shape_id in alive()},
                                  _parts(parts), category, ", ".join(map(str, inputs)))

    reports.append(render_stage.run(workspace, alive(), render_stage.RenderConfig(
        n_views=views, resolution=resolution, n_points=points, seed=seed, device=device),
        force))
    reports.append(detect_stage.run(workspace, alive(), detect_stage.DetectConfig(
        teacher=teacher, model=model, parts=_parts(parts), preset=preset, seed=seed,
        device=device, prompt=prompt or detect_stage.DEFAULT_TEMPLATE, category=category),
        force))
    if sam:
        from . import sam_refine as sam_stage

        reports.append(sam_stage.run(workspace, alive(), sam_stage.RefineConfig(
            model=sam, seed=seed, device=device), force))
    reports.append(superpoints_stage.run(workspace, alive(),
                                         superpoints_stage.SuperpointConfig(), force))
    reports.append(backproject_stage.run(workspace, alive(),
                                         backproject_stage.BackprojectConfig(), force))
    reports.append(vote_stage.run(workspace, alive(), vote_stage.VoteConfig(), force))
    methods = ["vote"]
    if distill_mode != "none" and alive():
        from . import distill as distill_stage

        config = distill_stage.DistillConfig(mode=distill_mode, seed=seed, device=device)
        if distill_mode == "pre" and shard:
            # One student over every shard's shapes, never one per shard: the shard that
            # completes the collection trains it (under a lock) and labels every shape.
            from .store import shape_scope

            everything = _input_ids(inputs)
            waiting = [s for s in everything
                       if not workspace.exists(shape_scope(s), "backproject")]
            if waiting:
                typer.echo(f"distill --mode pre: {len(waiting)} of {len(everything)} shapes "
                           "are not through backproject yet (other shards); the shard that "
                           "completes them trains the student, or run `partseg distill "
                           f"{work} --mode pre` once every shard is done", err=True)
            else:
                reports += distill_stage.run(workspace, everything, config, force)
                methods.append("distill")
        else:
            reports += distill_stage.run(workspace, alive(), config, force)
            methods.append("distill")
    # a trained teacher's own training shapes are not scored (detect warned about them)
    labelled = [sid for sid in alive() if evaluate_stage.has_ground_truth(workspace, sid)
                and not evaluate_stage.teacher_trained_on(workspace, sid)]
    for method in methods if labelled else []:
        # stored with its inputs' keys: a cached run reads no array to print it again;
        # the `evaluate` command gives mAP50 on data without instance labels
        table = evaluate_stage.run_table(workspace, labelled, method)
        typer.echo(f"[{method}]")
        typer.echo(table)
    if alive():  # else the failures below are all there is to say
        typer.echo(f"results in {work}; see into them with `partseg report {work} --out "
                   f"report.html`, export them with `partseg export {work} --out OUT "
                   f"--method {methods[-1]}`", err=True)
    finish(reports)


ViewCount = Annotated[int, typer.Option(help="Number of views.")]
Resolution = Annotated[int, typer.Option(help="Image size in pixels.")]
Points = Annotated[int, typer.Option(help="Points sampled from each mesh (point clouds "
                                     "keep theirs).")]
Preset = Annotated[str, typer.Option(help="Simulated teacher preset: glip-like, weak, "
                                     "clean; glip-like-leaky leaks ground-truth purity into "
                                     "confidences and features (for comparison only).")]
Backend = Annotated[str | None, typer.Option(help="Store backend of a new workspace: zarr "
                                             "or hdf5.")]
Model = Annotated[str | None, typer.Option(
    help="Teacher model id or local folder (for --teacher trained: the folder written by "
         "`partseg train-teacher`).")]
Sam = Annotated[str | None, typer.Option(
    help="Refine boxes into masks before lifting: a SAM model id/folder, 'grabcut', or "
         "'sam-oracle' (ground-truth masks: a measuring instrument).")]


@app.command("run", epilog=EXAMPLES["run"])
@shared_options(*EXECUTOR_OPTIONS)
def run_all(
    inputs: Annotated[list[Path], typer.Argument(
        help="Shape files or dataset folders (as for `partseg render`).", show_default=False)],
    work: Annotated[Path | None, typer.Option(
        "--work", "-w", help="Workspace folder (default: runs/<name of the first "
        "input>).")] = None,
    teacher: Teacher = "owlv2",
    model: Model = None,
    parts: Parts = None,
    prompt: Prompt = None,
    category: Category = None,
    sam: Sam = None,
    distill: Annotated[str, typer.Option(
        help="After voting, also distil a 3D student: none, tta or pre.")] = "none",
    views: ViewCount = 10,
    resolution: Resolution = 800,
    points: Points = 10000,
    preset: Preset = "glip-like",
    backend: Backend = None,
    shard: Shard = None,
    seed: Seed = 0,
    device: Device = "auto",
    force: Force = False,
) -> None:
    """Every stage in order, cached.

    render, detect, sam-refine (with --sam), superpoints, backproject, vote, distill
    (with --distill), then evaluate when the shapes have ground truth.
    """
    _pipeline(inputs, work or _default_work(inputs), teacher, model, parts, sam, distill,
              views, resolution, points, preset, backend, seed, device, force, shard, prompt,
              category)


def _distill_config(mode: str, encoder: str, encoder_checkpoint: Path | None, epochs: int,
                    lr: float, backward: bool, tau: float, bd_weighting: str, seed: int,
                    device: str, **deviations: object) -> DistillConfig:
    from .distill import DistillConfig, check_config

    latest = deviations.pop("bd_latest", "0.6")
    try:
        bd_latest = None if str(latest).lower() == "none" else float(str(latest))
    except ValueError:
        raise PartsegError(f"--bd-latest: a fraction such as 0.6, or none; not {latest!r}"
                           ) from None
    config = DistillConfig(mode=mode, encoder=encoder,
                           encoder_checkpoint=str(encoder_checkpoint) if encoder_checkpoint
                           else None, epochs=epochs, lr=lr, backward=backward, tau=tau,
                           bd_weighting=bd_weighting, seed=seed, device=device,
                           bd_latest=bd_latest, **deviations)
    check_config(config)
    return config


Mode = Annotated[str, typer.Option(
    help="tta: one student head per shape (test-time alignment); pre: one student over "
         "all selected shapes (pre-alignment).")]
Encoder = Annotated[str, typer.Option(
    help="Point encoder: pointnn (training-free, no weights), pointnet or dgcnn "
         "(learnable, trained with the head: the paper's Table 5 row 7).")]
EncoderCheckpoint = Annotated[Path | None, typer.Option(
    help="State-dict file for the encoder; a loaded encoder is frozen.")]
Epochs = Annotated[int, typer.Option(help="Training epochs (fixed schedule; the last "
                                     "state is used, never one chosen on test data).")]
Lr = Annotated[float, typer.Option(help="Adam learning rate.")]
Tau = Annotated[float, typer.Option(help="Backward distillation starts when the loss's "
                                   "5-epoch moving average changes by less than this.")]
BdWeighting = Annotated[str, typer.Option(
    help="How re-scored units weigh after backward distillation: part (C x C_bd relative "
         "to its part's mean, keeps thin parts) or replace (C_bd, the paper's form).")]


@app.command(epilog=EXAMPLES["distill"])
@shared_options(*EXECUTOR_OPTIONS)
def distill(
    work: Annotated[Path | None, typer.Argument(
        help="Workspace with knowledge units (`partseg backproject`).",
        show_default=False)] = None,
    mode: Mode = "tta",
    shape: Annotated[Path | None, typer.Option(
        help="Run every stage on this one shape file first (start to end); the "
             "workspace defaults to runs/<file stem>.")] = None,
    teacher: Teacher = "owlv2",
    model: Model = None,
    parts: Parts = None,
    prompt: Prompt = None,
    category: Category = None,
    labels: Annotated[Path | None, typer.Option(
        help="Few-shot: a folder of labelled shapes (any supported dataset layout) whose "
             "cross-entropy is added; needs --mode pre.")] = None,
    output: Annotated[str, typer.Option(help="Name of the stored labelling (evaluate "
                                        "--method NAME).")] = "distill",
    encoder: Encoder = "pointnn",
    encoder_checkpoint: EncoderCheckpoint = None,
    epochs: Epochs = 25,
    lr: Lr = 1e-3,
    backward: Annotated[bool, typer.Option(
        help="Backward distillation: re-score the units when the loss settles, then "
             "keep training on the re-scored units.")] = True,
    tau: Tau = 0.01,
    bd_weighting: BdWeighting = "part",
    normalise: Annotated[str, typer.Option(
        help="Loss normalisation: point (each point's loss divided by the units covering "
             "it, the released code), eq3 (each unit's by its area, summed over units: "
             "the paper's Eq. 3) or area (Eq. 3 averaged over units).")] = "point",
    tau_mode: Annotated[str, typer.Option(
        help="relative: --tau is relative to the loss at the start; absolute: the "
             "paper's threshold on the loss change itself.")] = "relative",
    bd_latest: Annotated[str, typer.Option(
        help="Start backward distillation by this fraction of the epochs at the latest; "
             "none: only when the loss plateaus (the paper).")] = "0.6",
    lr_schedule: Annotated[str, typer.Option(
        help="cosine (to lr/100, the released code) or constant (the paper).")] = "cosine",
    steps_per_epoch: Annotated[int, typer.Option(
        help="Test-time alignment: optimiser steps per epoch; pre-alignment: at least "
             "this many per epoch (an epoch is one pass over the shapes in batches of "
             "16; 1 is the reference's pass alone).")] = 3,
    feature_copies: Annotated[int, typer.Option(
        help="Pre-alignment with a frozen encoder: augmented copies of each training "
             "shape (the reference's scale, shift, jitter), encoded once and trained on "
             "beside it; 0: none (the frozen features of the shapes only).")] = 0,
    align: Annotated[str, typer.Option(
        help="Pre-alignment: none (the paper's: shapes are encoded as they are) or axes "
             "(every training shape and every shape the student labels is first rotated "
             "by the one of the 24 axis rotations that best matches a reference training "
             "shape, kept with the student; for collections not all oriented alike). "
             "TTA needs no alignment (one head per shape) and ignores it.")] = "none",
    train_ids: Annotated[list[str] | None, typer.Option(
        "--train-ids", help="Pre-alignment on these shapes only (ids or globs; "
        "repeatable): the student is saved (--student) and labels the selected shapes "
        "(inductive). Without it, --mode pre trains on the shapes it labels "
        "(transductive).")] = None,
    student: Annotated[str | None, typer.Option(
        help="Pre-alignment student folder (a name inside WORK, or a path): where "
             "--train-ids saves it; without --train-ids, a saved student to apply as it is "
             "(no retraining). Default: WORK/students/<output>-<category>.")] = None,
    png: Png = None,
    shape_id: Shapes = None,
    shard: Shard = None,
    seed: Seed = 0,
    device: Device = "auto",
    force: Force = False,
) -> None:
    """PartDistill: distil a 3D student from the teacher's knowledge units.

    --mode pre trains one student per part list, saved as a model folder, and labels
    the shapes with it; with --shard, the first shard to get there trains (under a lock
    in WORK) and every shard applies that one student."""
    from . import distill as stage

    if output != "distill" and not output.startswith("distill."):
        output = f"distill.{output}"
    from .detect import check_model

    # without --shape the teacher never runs here, and with it detect may be cached
    check_model(teacher, model, work or (_default_work([shape]) if shape else Path()))
    if shape is not None:
        work = work or _default_work([shape])
        _pipeline([shape], work, teacher, model, parts, None, "none", 10, 800, 10000,
                  "glip-like", None, seed, device, force, prompt=prompt, category=category)
    if work is None:
        raise PartsegError("give a workspace (WORK) or a shape file (--shape FILE)")
    workspace, everything = _open(work, shape_id)
    ids = _in_shard(everything, shard)
    config = _distill_config(mode, encoder, encoder_checkpoint, epochs, lr, backward, tau,
                             bd_weighting, seed, device, normalise=normalise,
                             tau_mode=tau_mode, bd_latest=bd_latest, lr_schedule=lr_schedule,
                             steps_per_epoch=steps_per_epoch, feature_copies=feature_copies,
                             align=align)
    reports = stage.run(workspace, ids, config, force, output=output, labels=labels,
                        train_ids=train_ids, student=student, collection_ids=everything)
    if png:
        _pictures(workspace, ids, png, output, reports[-1])
    finish(reports)


@app.command(epilog=EXAMPLES["rescore"])
@shared_options(*EXECUTOR_OPTIONS)
def rescore(
    work: Work,
    method: Annotated[str, typer.Option(
        help="The PartDistill labelling whose re-scores to store: distill, "
             "distill.NAME.")] = "distill",
    shape_id: Shapes = None,
    shard: Shard = None,
    force: Force = False,
) -> None:
    """Backward distillation: store the re-scored knowledge units (PartDistill Eq. 4).

    Copies the C_bd that `partseg distill` computed (no second student is trained) beside
    C; `evaluate --teacher-2d` then scores the teacher before and after, and refuses
    re-scores that are older than the units or the labelling."""
    from . import rescore as stage

    if method != "distill" and not method.startswith("distill."):
        method = f"distill.{method}"
    workspace, ids = _open(work, shape_id, shard)
    finish([stage.run(workspace, ids, method, force)])


@app.command(epilog=EXAMPLES["adapt"])
@shared_options(*EXECUTOR_OPTIONS)
def adapt(
    work: Annotated[Path | None, typer.Argument(
        help="Workspace folder (made by `partseg render`/`run`); with --labels it defaults "
             "to runs/<--shape file stem>.", show_default=False)] = None,
    method: Annotated[str, typer.Option(
        help="Few-shot method: partstad (learned box weights, Kim & Sung 2024) or bipart.")
                      ] = "partstad",
    train_ids: Annotated[list[str] | None, typer.Option(
        "--train-ids", help="Train on these labelled shapes (glob patterns, repeatable), "
        "e.g. 'Chair_1*' for 8 shapes of one category; every shape is labelled after.")
                         ] = None,
    model_name: Annotated[str | None, typer.Option(
        help="Where to save the trained network: a name (a folder in the workspace) or a "
             "path.")] = None,
    apply: Annotated[str | None, typer.Option(
        help="Label the shapes with a saved network: its name in this workspace or a path "
             "(e.g. ../chairs/chair-stad).")] = None,
    epochs: Annotated[int | None, typer.Option(
        help="Training epochs (default: the method's paper value; PartSTAD 400). The last "
             "state is kept, never one chosen on test shapes.")] = None,
    lr: Annotated[float | None, typer.Option(
        help="Learning rate of the network (default: the paper's; PartSTAD AdamW 1e-4).")
                  ] = None,
    batch_size: Annotated[int | None, typer.Option(
        help="Shapes per training step (default: the paper's; PartSTAD 2).")] = None,
    loss: Annotated[str | None, typer.Option(
        help="PartSTAD loss: mriou (1 - relaxed 3D mIoU, the paper) or ce (cross-entropy, "
             "its supplementary ablation).")] = None,
    weights: Annotated[str | None, typer.Option(
        help="PartSTAD box weights: learned (the paper) or confidence (the detector's "
             "confidence, only the null score learned; supplementary ablation).")] = None,
    null_lr: Annotated[float | None, typer.Option(
        help="PartSTAD: AdamW learning rate of the null score (paper 5e-2).")] = None,
    threshold: Annotated[float | None, typer.Option(
        help="PartSTAD: a superpoint takes a part only with at least this probability "
             "(default 0.5).")] = None,
    instances: Annotated[bool | None, typer.Option(
        "--instances/--no-instances", help="PartSTAD: also merge superpoints into "
        "instances (default on).")] = None,
    support: Annotated[str | None, typer.Option(
        help="BiPart support selection: random, similarity (BPS cosine) or part-perfect "
             "(the paper's Eq. 4; default).")] = None,
    support_size: Annotated[int | None, typer.Option(
        help="BiPart: shapes per support set, the target included (paper 8).")] = None,
    inner_steps: Annotated[int | None, typer.Option(
        help="BiPart training: SGD steps of the head per support set (paper 5).")] = None,
    inner_lr: Annotated[float | None, typer.Option(
        help="BiPart training: inner-loop learning rate (paper 0.1).")] = None,
    adapt_steps: Annotated[int | None, typer.Option(
        help="BiPart inference: SGD steps of the head on the target's support set (paper "
             "10; 0 predicts with the trained head).")] = None,
    adapt_lr: Annotated[float | None, typer.Option(
        help="BiPart inference: inner-loop learning rate (paper 0.3).")] = None,
    order: Annotated[str | None, typer.Option(
        help="BiPart: second (differentiate through the inner loop; default) or first "
             "(first-order MAML).")] = None,
    bilevel: Annotated[bool | None, typer.Option(
        "--bilevel/--no-bilevel", help="BiPart: bi-level training (default) or plain "
        "training on each shape's own loss (Table 3's ablation).")] = None,
    blocks: Annotated[int | None, typer.Option(
        help="BiPart: Point Transformer blocks of the extractor (paper 2; 0 = none, "
             "Table 3's ablation).")] = None,
    head_outputs: Annotated[int | None, typer.Option(
        help="BiPart training: outputs of the head (default: the largest part count of the "
             "training categories; give the largest of every category it will label, "
             "unseen ones included, as the paper does).")] = None,
    labels: Annotated[Path | None, typer.Option(
        help="Train on a folder of labelled shapes (any supported dataset layout, e.g. "
             "few_shot/Chair): they, and --shape, go through `run`'s stages (--teacher, "
             "--model, --parts, --sam) into WORK first; saved as --model-name (default "
             "<method>-<folder name>).")] = None,
    shape: Annotated[Path | None, typer.Option(
        help="With --labels: the shape file to label (only it is labelled besides the "
             "training shapes).")] = None,
    teacher: Teacher = "owlv2",
    model: Model = None,
    parts: Parts = None,
    sam: Sam = None,
    views: ViewCount = 10,
    resolution: Resolution = 800,
    points: Points = 10000,
    shape_id: Shapes = None,
    shard: Shard = None,
    seed: Seed = 0,
    device: Device = "auto",
    force: Force = False,
) -> None:
    """Few-shot adaptation: train a method on labelled shapes, or apply a trained one.

    Stores a labelling per shape under the method's name (`evaluate --method partstad`);
    training shapes are marked and never scored as test shapes.
    """
    from . import adapt as stage
    from .pipeline import resolve_device

    if labels is not None:
        if train_ids or apply:
            raise PartsegError("--labels trains on that folder: give it without "
                               "--train-ids / --apply")
        work = work or Path("runs") / (shape.stem if shape is not None else labels.name)
        train_ids, targets = _few_shot_inputs(labels, shape)
        _pipeline([labels] + ([shape] if shape is not None else []), work, teacher, model,
                  parts, sam, "none", views, resolution, points, "glip-like", None, seed,
                  device, force)
        model_name = model_name or f"{method}-{labels.name}"
        shape_id = shape_id or targets or train_ids
    elif shape is not None:
        raise PartsegError("--shape needs --labels DIR (the labelled shapes to train on)")
    if work is None:
        raise PartsegError("give a workspace (WORK) or a folder of labelled shapes "
                           "(--labels DIR)")
    workspace, ids = _open(work, shape_id, shard)
    options = {"loss": loss, "weights": weights, "null_lr": null_lr, "threshold": threshold,
               "instances": instances}
    options |= {"support": support, "support_size": support_size, "inner_steps": inner_steps,
                "inner_lr": inner_lr, "test_inner_steps": adapt_steps,
                "test_inner_lr": adapt_lr, "order": order, "bilevel": bilevel,
                "blocks": blocks, "head_outputs": head_outputs}
    config = stage.AdaptConfig(train_ids=train_ids, model_name=model_name, apply=apply,
                               epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                               device=resolve_device(device),
                               options={k: v for k, v in options.items() if v is not None})
    finish(stage.run(method, workspace, ids, config, force))



def _few_shot_inputs(labels: Path, shape: Path | None) -> tuple[list[str], list[str]]:
    """Shape ids of the labelled folder (the training shapes) and of the file to label;
    one line when the folder holds no labelled shape."""
    from .shapes import discover

    found, _ = discover(labels)
    if not found:
        raise InputError(labels, "no labelled shapes found in this folder")
    targets = [s.shape_id for s in discover(shape)[0]] if shape is not None else []
    return [s.shape_id for s in found], targets


@app.command("train-teacher", epilog=EXAMPLES["train-teacher"])
@shared_options()
def train_teacher(
    inputs: Annotated[list[Path], typer.Argument(
        help="Labelled shapes: files or dataset folders (as for `partseg render`).",
        show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model folder to write (a new "
                                      "folder, or a model folder to replace).")],
    work: Annotated[Path | None, typer.Option(
        "--work", "-w", help="Workspace for the training renders (cached; default: "
        "OUT.work beside the model folder).")] = None,
    shape_id: Annotated[list[str] | None, typer.Option(
        "--shape-id", help="Train only on these shape ids (glob patterns allowed; "
        "repeatable); keep the shapes you score out of this set.")] = None,
    views: ViewCount = 10,
    resolution: Annotated[int, typer.Option(help="Render size in pixels (the views are "
                                            "resized to --input-size).")] = 800,
    points: Points = 10000,
    input_size: Annotated[int, typer.Option(help="Network input side in pixels (a "
                                            "multiple of 2**levels).")] = 64,
    width: Annotated[int, typer.Option(help="Channels of the network's first level.")] = 8,
    levels: Annotated[int, typer.Option(help="Poolings of the U-Net.")] = 3,
    crop: Annotated[bool, typer.Option(
        "--crop/--no-crop", help="Feed the network a square around the drawn object "
        "instead of the whole view (thin parts keep more network pixels).")] = False,
    epochs: Annotated[int, typer.Option(help="Passes over the training views (fixed "
                                        "schedule; the last state is saved).")] = 40,
    batch_size: Annotated[int, typer.Option(help="Views per training step.")] = 8,
    lr: Lr = 2e-3,
    restarts: Annotated[int, typer.Option(help="Train this many times (seeds SEED, "
                                          "SEED+1, ...) and keep the run with the lowest "
                                          "final training loss.")] = 4,
    target_miou: Annotated[float | None, typer.Option(
        help="Calibrate instead of doing the best one can: hold folds of the training "
        "shapes out in turn, find the epoch at which their box 2D mIoU first reaches this "
        "value (e.g. 0.5, GLIP's band), and stop the final training there. For a teacher "
        "used as a measuring instrument, not for the best teacher; on the dev shapes it "
        "misses the band (README).",
        show_default=False)] = None,
    calibration_folds: Annotated[int, typer.Option(
        help="Folds of the training shapes for --target-miou (shape i is in fold i mod "
        "N).")] = 2,
    backend: Backend = None,
    seed: Seed = 0,
    device: Device = "auto",
    force: Force = False,
) -> None:
    """Train a per-category 2D teacher on the renders of a few labelled shapes.

    It learns the part names of these shapes (not open-vocabulary); use it with
    `detect` / `run` --teacher trained (boxes) or trained-pixels --model OUT.
    """
    from . import render as render_stage
    from . import train_teacher as stage
    from .pipeline import resolve_device

    config = stage.TrainTeacherConfig(input_size=input_size, width=width, levels=levels,
                                      crop=crop, epochs=epochs, batch_size=batch_size, lr=lr,
                                      restarts=restarts, target_miou=target_miou,
                                      calibration_folds=calibration_folds, seed=seed,
                                      device=resolve_device(device))
    stage.check_config(config)
    stage.check_out(out)
    work = work if work is not None else out.with_name(out.name + ".work")
    loaded = _load_inputs(inputs, work, backend, points, seed, force, None, shape_id)
    if loaded is None:
        return
    workspace, sources, ingested = loaded
    ok = [s.shape_id for s in sources if s.shape_id not in ingested.failed]
    rendered = render_stage.run(workspace, ok, render_stage.RenderConfig(
        n_views=views, resolution=resolution, n_points=points, seed=seed,
        device=config.device), force)
    reports = [ingested, rendered]
    if ingested.failed or rendered.failed:
        finish(reports)  # a teacher trained on fewer shapes than asked would surprise
    reports.append(stage.run(workspace, ok, config, out, force))
    typer.echo(f"teacher saved in {out}; use it with --teacher trained --model {out}",
               err=True)
    finish(reports)


check_every_command(app)  # range checks of every command's values (options.py), last


if __name__ == "__main__":
    main()
