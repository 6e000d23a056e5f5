"""Examples shown at the end of each command's --help (typer epilogs).

Each is a few commands a user can paste; paragraphs are separated by blank lines so
that typer's help formatter keeps one command per line.
"""

from __future__ import annotations


def _examples(*lines: str) -> str:
    return "Examples:\n\n" + "\n\n".join(lines)


EXAMPLES: dict[str, str] = {
    "partseg": _examples(
        "partseg render data/ShapeNetPart            # workspace runs/ShapeNetPart",
        "partseg run examples/toy_chairs --teacher simulated --distill tta",
        "partseg distill --mode tta --shape chair.ply --category chair   # one file, start "
        "to end",
        "partseg report runs/toy_chairs --out report.html"),
    "render": _examples(
        "partseg render data/ShapeNetPart            # workspace runs/ShapeNetPart",
        "partseg render chair.ply --work runs/chair --views 6 --resolution 512",
        "partseg render data/ --work runs/all --shard $SLURM_ARRAY_TASK_ID/10"),
    "inspect": _examples("partseg inspect runs/chairs"),
    "status": _examples(
        "partseg status runs/all            # per stage done/stale/missing/failed, jobs",
        "partseg status runs/all --json"),
    "detect": _examples(
        "partseg detect runs/chairs --teacher owlv2 --parts \"back,seat,leg,arm\"",
        "partseg detect runs/chairs --teacher grounding-dino --category \"office chair\"",
        "partseg detect runs/chairs --prompt \"a photo of the {part} of a {category}\"",
        "partseg detect runs/chairs --teacher simulated --png pictures/"),
    "sam-refine": _examples(
        "partseg sam-refine runs/chairs --model facebook/sam-vit-base",
        "partseg sam-refine runs/chairs --model grabcut",
        "partseg sam-refine runs/chairs --checkpoint sam_vit_h_4b8939.pth   "
        "# pip install 'partseg\\[sam]'"),
    "superpoints": _examples("partseg superpoints runs/chairs --regularization 0.1"),
    "backproject": _examples("partseg backproject runs/chairs --source masks"),
    "vote": _examples("partseg vote runs/chairs --threshold 0.6 --png pictures/"),
    "export": _examples(
        "partseg export runs/chairs --out exported/ --method distill --ground-truth"),
    "show": _examples("partseg show runs/chairs --shape 'Chair_10*' --view 0 --out pictures/"),
    "report": _examples(
        "partseg report runs/chairs --out report.html",
        "partseg report runs/chairs --out report.html --method distill --view 0 --view 5"),
    "evaluate": _examples(
        "partseg evaluate runs/chairs --method vote --teacher-2d",
        "partseg evaluate runs/chairs --method distill --json - | jq .overall",
        "partseg evaluate runs/chairs --pred exported/ --csv scores.csv"),
    "run": _examples(
        "partseg run examples/toy_chairs --teacher simulated   # workspace runs/toy_chairs",
        "partseg run data/chairs --work runs/chairs --teacher owlv2 --category chair",
        "partseg run data/chairs --work runs/chairs --sam facebook/sam-vit-base "
        "--distill tta",
        "partseg run data/ --work runs/all --executor slurm --jobs 50 --slurm-partition gpu "
        "--slurm-gres gpu:1   # a job array; `partseg status runs/all` follows it"),
    "distill": _examples(
        "partseg distill --mode tta --shape chair.ply --category chair   # workspace "
        "runs/chair; an unlabelled file needs --category (a known part list) or --parts",
        "partseg distill runs/chairs --mode pre --output pre",
        "partseg evaluate runs/chairs --method distill.pre"),
    "rescore": _examples("partseg rescore runs/chairs && partseg evaluate runs/chairs "
                         "--teacher-2d"),
    "adapt": _examples(
        "partseg adapt runs/chairs --method partstad --train-ids 'Chair_1*' --model-name stad",
        "partseg adapt runs/other --apply ../chairs/stad",
        "partseg adapt runs/all --method bipart --model-name bipart"),
    "train-teacher": _examples(
        "partseg train-teacher data/Chair --shape-id 'Chair_10[1-8]' --out models/chair",
        "partseg run data/Chair --work runs/chairs --teacher trained --model models/chair"),
}
