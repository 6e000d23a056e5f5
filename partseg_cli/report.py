"""`partseg report W --out report.html`: one self-contained page to see into a workspace.

The page holds, with every image inline (base64 PNG), so the single file can be mailed
or attached to a CI run:

- a **summary**: per-category and overall mIoU of the labelling, the per-part IoU
  table, and the teacher's 2D diagnostics (confidence-weighted mIoU2D before and after
  re-scoring, boxes found per shape);
- **per shape**: its score, the counts and warnings its stages noted (parts found,
  points labelled, a teacher that said nothing), a legend of its part colours, and the
  debug sheets of `partseg show` for the chosen views (the teacher's boxes / masks /
  pixel maps over the render, the prediction, the ground truth, the errors);
- the **provenance** of each number: the method and convention, the teacher, the
  partseg version, and per shape every stored stage's key, parameters and version.

Scores come from `evaluate.run` (the same figures as `partseg evaluate`); training
shapes of a method or teacher are left out of them as there.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

from . import __version__
from .atomic import write_text
from .errors import PartsegError
from .notes import Notes
from .store import Workspace, shape_scope

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 3px 8px; text-align: left; }
th { background: #eee; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.shape { border: 1px solid #ddd; padding: 0.6em 1em; margin: 1em 0; border-radius: 4px; }
.swatch { display: inline-block; width: 1em; height: 1em; vertical-align: middle;
          border: 1px solid #555; margin: 0 0.3em 0 0.8em; }
.warn { color: #a30; } .muted { color: #777; font-size: 0.85em; }
img.sheet { display: block; max-width: 100%; margin: 0.5em 0; border: 1px solid #eee; }
details { margin: 0.3em 0; } summary { cursor: pointer; color: #555; }
"""


def _e(text: Any) -> str:
    return html.escape(str(text))


def _pct(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def _png(picture: Any) -> str:
    """A PIL image as a data: URI (the page stays one file)."""
    buf = io.BytesIO()
    picture.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _table(header: list[str], rows: list[list[str]], numeric_from: int = 1,
           caption: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td class=\"num\">{c}</td>" if i >= numeric_from else f"<td>{c}</td>"
                         for i, c in enumerate(row)) + "</tr>" for row in rows)
    cap = f"<caption class=\"muted\">{_e(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _legend(names: list[str], palette: Any) -> str:
    spans = [f"<span class=\"swatch\" style=\"background: rgb{tuple(int(c) for c in colour)}\">"
             f"</span>{_e(name)}" for name, colour in zip(names, palette, strict=False)]
    return "<div class=\"legend\">parts:" + "".join(spans) + "</div>"


def _choose_method(workspace: Workspace, shape_ids: list[str], method: str) -> str | None:
    """The labelling to report: ``method`` (as `evaluate --method` resolves it: a name
    stored in none of the shapes is refused in one line, not reported as a page without
    scores), or for "auto" the most downstream one most shapes have."""
    from .evaluate import resolve_method
    from .show import default_method

    if method != "auto":
        return resolve_method(workspace, shape_ids, method)
    found = Counter(m for sid in shape_ids if (m := default_method(workspace, sid)))
    return found.most_common(1)[0][0] if found else None


def _scores(workspace: Workspace, shape_ids: list[str], method: str | None,
            convention: str) -> tuple[Any, dict[str, float], str]:
    """(EvalReport or None, {shape_id: point mIoU}, a sentence on what was not scored)."""
    from . import evaluate

    labelled = [sid for sid in shape_ids if evaluate.has_ground_truth(workspace, sid)]
    if method is None or not labelled:
        return None, {}, "no labelled shape with a labelling: nothing scored"
    try:
        report, failed = evaluate.run(workspace, labelled, method, None, convention,
                                      teacher_2d=True)
    except PartsegError:
        try:  # the 2D diagnostics need backproject outputs; score without them
            report, failed = evaluate.run(workspace, labelled, method, None, convention)
        except PartsegError as exc:
            return None, {}, f"not scored: {exc}"
    per_shape = {}
    for row in getattr(report, "shapes", None) or []:
        per_shape[row["shape_id"]] = row["points"]["miou"]
    note = f"{len(failed)} shape(s) not scored: " + "; ".join(
        f"{k}: {v}" for k, v in list(failed.items())[:5]) if failed else ""
    return report, per_shape, note


def _summary(report: Any, method: str, note: str) -> str:
    if report is None:
        return f"<p class=\"warn\">{_e(note)}</p>"
    domains = list(report.domains)
    # the teacher's own 2D scores: mIoU2D before/after re-scoring, box precision/recall
    # against ground-truth part components and confidence AUROC (`evaluate --teacher-2d`)
    teacher = {f"teacher 2D mIoU {w} %": t for w, t in (report.teacher_2d or {}).items()}
    teacher |= {f"teacher box {n.replace('_', ' ')} %": t
                for n, t in (getattr(report, "teacher_boxes", None) or {}).items()}
    header = ["category", "shapes"] + [f"{d} mIoU %" for d in domains] + list(teacher)
    rows = []
    for c in report.categories:
        rows.append([_e(c), str(report.n_shapes[c])]
                    + [_pct(report.domains[d].category_miou.get(c)) for d in domains]
                    + [_pct(t.get(c)) for t in teacher.values()])
    rows.append(["<b>overall</b>", str(sum(report.n_shapes.values()))]
                + [f"<b>{_pct(report.domains[d].overall_miou)}</b>" for d in domains]
                + [_pct(t.get("mean")) for t in teacher.values()])
    parts = [f"<h2>Scores: {_e(method)}</h2>",
             _table(header, rows, caption=f"convention {report.convention}; figures in %")]
    if note:
        parts.append(f"<p class=\"warn\">{_e(note)}</p>")
    parts.append("<h3>Per-part IoU (%)</h3>")
    for c in report.categories:
        for d in domains:
            scores = report.domains[d]
            if c not in scores.part_iou:
                continue
            names = report.part_names[c]
            parts.append(_table(["category", "domain"] + names,
                                [[_e(c), d] + [_pct(v) for v in scores.part_iou[c]]],
                                numeric_from=2))
    if report.training_ids:
        parts.append(f"<p class=\"muted\">{len(report.training_ids)} training shape(s) of the "
                     "method are not in these figures.</p>")
    return "\n".join(parts)


def _provenance(workspace: Workspace, shape_id: str) -> str:
    scope = shape_scope(shape_id)
    rows = []
    for stage in workspace.stages(scope):
        info = workspace.info(scope, stage) or {}
        created = info.get("created")
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(created)) if created else "-"
        params = json.dumps(info.get("params", {}), sort_keys=True, default=str)
        rows.append([_e(stage), f"<code>{_e(info.get('key', '-'))}</code>",
                     _e(info.get("version", "-")), when,
                     f"<code>{_e(params[:300] + ('...' if len(params) > 300 else ''))}</code>"])
    return ("<details><summary>provenance: stored stages, keys, parameters</summary>"
            + _table(["stage", "key", "partseg", "created (UTC)", "parameters"], rows,
                     numeric_from=99) + "</details>")


def _teacher_line(workspace: Workspace, shape_id: str) -> str:
    scope = shape_scope(shape_id)
    if not workspace.exists(scope, "detect"):
        return ""
    attrs = workspace.read(scope, "detect", names=[]).record_attrs
    prompts = attrs.get("prompts") or []
    text = f"teacher: {_e(attrs.get('teacher') or '?')}"
    if prompts:
        text += "; prompts: " + ", ".join(f"&ldquo;{_e(p)}&rdquo;" for p in prompts)
    return f"<p class=\"muted\">{text}</p>"


def _notes(workspace: Workspace, shape_id: str) -> tuple[str, int]:
    scope = shape_scope(shape_id)
    lines, n_warnings = [], 0
    for stage in workspace.stages(scope):
        notes = Notes.from_json((workspace.info(scope, stage) or {}).get("notes"))
        if notes.counts:
            lines.append(f"<li>{_e(stage)}: {_e(notes.counts)}</li>")
        for _, message in notes.warnings:
            lines.append(f"<li class=\"warn\">{_e(stage)}: warning: {_e(message)}</li>")
            n_warnings += 1
    return ("<ul>" + "".join(lines) + "</ul>" if lines else ""), n_warnings


def _shape_section(workspace: Workspace, shape_id: str, method: str | None,
                   miou: float | None, views: list[int] | None, size: int) -> tuple[str, int]:
    from .show import shape_sheets

    if views:
        sheets, names, palette, category = shape_sheets(workspace, shape_id, method, views,
                                                        size)
        key = _legend(names, palette)
    else:  # listed without pictures: read no render
        attrs = workspace.read(shape_scope(shape_id), "shape", names=[]).record_attrs
        sheets, key, category = [], "", attrs.get("category", "")
    notes, n_warnings = _notes(workspace, shape_id)
    score = "" if miou is None else f" &mdash; point mIoU {_pct(miou)}%"
    images = "".join(f"<img class=\"sheet\" alt=\"{_e(shape_id)} view {v}\" "
                     f"src=\"{_png(sheet)}\">" for v, sheet in sheets)
    body = (f"<div class=\"shape\" id=\"shape-{_e(shape_id)}\"><h3>{_e(shape_id)} "
            f"<span class=\"muted\">({_e(category or 'no category')}; "
            f"{_e(method or 'no labelling')})</span>{score}</h3>"
            + _teacher_line(workspace, shape_id) + notes + key + images
            + _provenance(workspace, shape_id) + "</div>")
    return body, n_warnings


def write_report(workspace: Workspace, shape_ids: list[str], out: Path,
                 method: str = "auto", views: list[int] | None = None, size: int = 260,
                 convention: str = "shapenetpart", max_pictures: int = 40) -> dict[str, int]:
    """Write the report of ``shape_ids`` to ``out`` (atomically) and return counts:
    {"shapes", "images", "warnings"}.

    method: the stored labelling shown and scored ("auto": the most downstream one most
    shapes have); views: which views per shape (default the first two); size: the
    largest panel side in pixels; max_pictures: shapes shown with pictures (the rest
    are scored and listed with their notes: the page stays small enough to open).
    """
    chosen = _choose_method(workspace, shape_ids, method)
    report, per_shape, note = _scores(workspace, shape_ids, chosen, convention)
    views = views if views is not None else [0, 1]
    sections, n_images, n_warnings = [], 0, 0
    for sid in shape_ids:
        try:
            shape_views = (_existing_views(workspace, sid, views)
                           if len(sections) < max_pictures else [])
            body, warned = _shape_section(workspace, sid, chosen, per_shape.get(sid),
                                          shape_views, size)
            n_images += len(shape_views)
            n_warnings += warned
        except PartsegError as exc:
            body = (f"<div class=\"shape\"><h3>{_e(sid)}</h3><p class=\"warn\">not shown: "
                    f"{_e(exc)}</p></div>")
        sections.append(body)
    if len(shape_ids) > max_pictures:
        sections.insert(max_pictures, f"<p class=\"muted\">Pictures of the first {max_pictures} "
                        f"of {len(shape_ids)} shapes (--max-pictures); the rest are listed "
                        "without them.</p>")
    index = " ".join(f"<a href=\"#shape-{_e(s)}\">{_e(s)}</a>" for s in shape_ids)
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>partseg report: {_e(workspace.root.name)}</title><style>{STYLE}</style>"
        "</head><body>"
        f"<h1>partseg report: {_e(workspace.root)}</h1>"
        f"<p class=\"muted\">partseg {_e(__version__)}, written "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; method "
        f"<b>{_e(chosen or 'none')}</b>, convention {_e(convention)}; {len(shape_ids)} "
        f"shape(s), {n_warnings} warning(s). Scores are those of <code>partseg evaluate "
        f"--method {_e(chosen or '?')} --convention {_e(convention)}</code>; each shape's "
        "provenance lists the stored stages they come from.</p>"
        + _summary(report, chosen or "none", note)
        + f"<h2>Shapes</h2><p>{index}</p>" + "\n".join(sections) + "</body></html>\n")
    write_text(out, page)
    return {"shapes": len(shape_ids), "images": n_images, "warnings": n_warnings}


def _existing_views(workspace: Workspace, shape_id: str, views: list[int]) -> list[int]:
    """The asked views this shape has (a shape rendered with fewer views shows fewer)."""
    info = workspace.info(shape_scope(shape_id), "render")
    if info is None:
        raise PartsegError(f"{shape_id}: not rendered yet (run `partseg render`)")
    n_views = int(info.get("params", {}).get("n_views", max(views) + 1))
    return [v for v in views if 0 <= v < n_views] or [0]
