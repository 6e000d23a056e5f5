"""`partseg inspect`: a readable summary of what a workspace holds."""

from __future__ import annotations

import time

from .errors import CorruptError
from .pipeline import STAGE_VERSIONS
from .store import Workspace, shape_scope


def _age(created: float) -> str:
    seconds = max(0.0, time.time() - created)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def describe(workspace: Workspace) -> tuple[str, int]:
    """One block per shape: stage, key prefix, age and parameters; and how many stored
    artifacts are corrupt (listed as such, with the problem, instead of an age)."""
    ids = workspace.shape_ids()
    order = {name: i for i, name in enumerate(STAGE_VERSIONS)}
    corrupt = 0
    lines = [f"workspace {workspace.root} ({workspace.backend_name}), {len(ids)} shape(s)"]
    for shape_id in ids:
        scope = shape_scope(shape_id)
        lines.append(f"{shape_id}")
        stages = sorted(workspace.stages(scope), key=lambda s: (order.get(s.split(".")[0], 99), s))
        for stage in stages:
            try:
                info = workspace.info(scope, stage) or {}
            except CorruptError as exc:
                corrupt += 1
                lines.append(f"  {stage:<14} CORRUPT: {exc}")
                continue
            params = ", ".join(f"{k}={v}" for k, v in sorted(info.get("params", {}).items())
                               if k != "digest" and v is not None)
            lines.append(f"  {stage:<14} {str(info.get('key', '?'))[:10]}  "
                         f"{_age(info.get('created', 0.0)):>4} ago  {params}")
    collections = workspace.data_root / "collections"
    if collections.is_dir():
        for folder in sorted(p for p in collections.iterdir() if p.is_dir()):
            scope = f"collections/{folder.name}"
            lines.append(f"collection {folder.name}: {', '.join(workspace.stages(scope))}")
    return "\n".join(lines), corrupt
