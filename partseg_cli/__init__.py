"""partseg: zero- and few-shot 3D part segmentation from 2D vision-language models.

The Python API (see `partseg_cli.api` and the README):

- ``shape_from_arrays(points | vertices+faces, labels=..., part_names=...)``, ``load(path)``:
  shapes from arrays or any file / dataset folder `partseg render` reads;
- ``open_workspace(path, create=True)``, ``add_shape(workspace, shape)``,
  ``run_stage(workspace, "detect", teacher="owlv2", ...)``: any stage, cached as the CLI;
- ``segment(mesh_or_points, parts, teacher=..., method="vote" | "distill")``: one call,
  returning a ``Labelling`` (``point_labels`` index ``part_names``, -1 unlabelled).

Importing the package loads no heavy library; the stages load what they need.
"""

__version__ = "0.1.0"

from .api import (  # noqa: E402 (the stores read __version__ above)
    add_shape,
    load,
    open_workspace,
    run_stage,
    segment,
    shape_from_arrays,
    stage_config,
)
from .errors import PartsegError  # noqa: E402
from .records import Labelling, Shape  # noqa: E402
from .store import Workspace  # noqa: E402

__all__ = ["Labelling", "PartsegError", "Shape", "Workspace", "__version__", "add_shape",
           "load", "open_workspace", "run_stage", "segment", "shape_from_arrays",
           "stage_config"]
