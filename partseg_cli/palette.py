"""Part colours and legends: the one palette every picture and export uses.

Part ``i`` of a shape always gets ``part_palette(n)[i]``, so the same part has the same
colour in the debug pictures (`show.py`), the HTML report, the exported PLY/GLB files
and their legend PNG. Unlabelled points and faces are grey, background white.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

GREY = np.array([150, 150, 150], np.uint8)  # unlabelled foreground
WHITE = np.array([255, 255, 255], np.uint8)  # background

# Twelve qualitative colours that stay apart for people with common colour-vision
# deficiencies (Tableau 10 without its grey, plus two darker ones); more parts get
# golden-ratio hues after these.
_FIXED = np.array([
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207), (174, 199, 232),
    (0, 80, 40), (120, 0, 60),
], np.uint8)

# Error maps: what each pixel of a predicted labelling is compared with its ground truth.
ERROR_CLASSES: list[tuple[str, tuple[int, int, int]]] = [
    ("correct", (175, 225, 175)),
    ("wrong part", (0, 0, 0)),  # black and yellow: unlike any part colour
    ("no part predicted", (255, 200, 0)),
    ("no ground truth", (150, 150, 150)),
]


def part_palette(n_parts: int) -> np.ndarray:
    """(n_parts, 3) uint8 distinct colours, the same prefix for any ``n_parts``."""
    if n_parts <= len(_FIXED):
        return _FIXED[:n_parts].copy()
    hue = (np.arange(n_parts - len(_FIXED)) * 0.618033988749895 + 0.1) % 1.0
    # HSV -> RGB with s = 0.75, v = 0.9, vectorised over labels
    k = (np.array([5.0, 3.0, 1.0])[None] + hue[:, None] * 6) % 6
    rgb = 0.9 - 0.9 * 0.75 * np.clip(np.minimum(k, 4 - k), 0, 1)
    return np.concatenate([_FIXED, (rgb * 255 + 0.5).astype(np.uint8)])


def colour_labels(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(N, 4) RGBA uint8 per label; -1 (unlabelled) is grey."""
    labels = np.asarray(labels)
    rgb = np.where((labels >= 0)[:, None], palette[np.maximum(labels, 0)], GREY)
    return np.concatenate([rgb, np.full((len(labels), 1), 255, np.uint8)], axis=1)


def label_image(labels: np.ndarray, foreground: np.ndarray, palette: np.ndarray
                ) -> np.ndarray:
    """(H, W, 3) uint8 picture of a (H, W) label image: parts in their colours, labelled
    -1 foreground grey, background (``~foreground``) white."""
    img = np.where(foreground[..., None], GREY, WHITE).astype(np.uint8)
    known = labels >= 0
    img[known] = palette[labels[known]]
    return img


def error_image(pred: np.ndarray, gt: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 error map of two (H, W) label images (colours: ERROR_CLASSES)."""
    colours = np.array([c for _, c in ERROR_CLASSES], np.uint8)
    kind = np.full(pred.shape, 3, np.int8)  # no ground truth
    labelled = gt >= 0
    kind[labelled & (pred == gt)] = 0
    kind[labelled & (pred != gt) & (pred >= 0)] = 1
    kind[labelled & (pred < 0)] = 2
    img = colours[kind]
    img[~foreground] = WHITE
    return img


def font(size: int = 14):  # -> PIL.ImageFont.FreeTypeFont
    """Pillow's bundled scalable font at ``size`` pixels."""
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def legend(entries: list[tuple[str, tuple[int, int, int] | np.ndarray]], width: int,
           size: int = 14) -> Image.Image:
    """A white strip ``width`` pixels wide with one colour swatch and name per entry,
    wrapped onto as many rows as needed."""
    from PIL import Image, ImageDraw

    face = font(size)
    pad, swatch = size // 2, size
    cells = [(name, tuple(int(c) for c in colour),
              swatch + pad + int(face.getlength(name)) + 2 * pad) for name, colour in entries]
    rows: list[list[tuple[str, tuple[int, ...], int]]] = [[]]
    used = pad
    for cell in cells:
        if rows[-1] and used + cell[2] > width:
            rows.append([])
            used = pad
        rows[-1].append(cell)
        used += cell[2]
    line = size + pad
    img = Image.new("RGB", (width, pad + line * len(rows)), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for r, row in enumerate(rows):
        x, y = pad, pad + r * line
        for name, colour, cell_width in row:
            draw.rectangle([x, y, x + swatch, y + swatch], fill=colour, outline=(0, 0, 0))
            draw.text((x + swatch + pad, y + swatch // 2), name, fill=(0, 0, 0), font=face,
                      anchor="lm")
            x += cell_width
    return img


def part_entries(names: list[str], palette: np.ndarray, unlabelled: bool = True
                 ) -> list[tuple[str, np.ndarray]]:
    """Legend entries for parts (and, optionally, the grey of unlabelled)."""
    entries = [(name, palette[i]) for i, name in enumerate(names)]
    return entries + ([("unlabelled", GREY)] if unlabelled else [])
