"""The probe's picture: per-token zero-shot correctness over the image.

One row per image, one column per morphing schedule (identity first). Each
token's cell is tinted ``CORRECT`` when it predicts the image's label and
``WRONG`` otherwise (``ALPHA`` of the colour over the image); a ``BORDER``
line separates adjacent tokens whose predicted classes differ (so the
spatial consistency shows even where every token is wrong); box outlines in
``BOX_COLOUR``. Column headers give the schedule, its number of groups and
the image's token accuracy / neighbour agreement.
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mmdtm.utils.morph_vis import BACKGROUND, BORDER, HEADER, PAD

CORRECT = (0, 200, 0)
WRONG = (230, 0, 0)
BOX_COLOUR = (0, 90, 255)
ALPHA = 0.45
TITLE = 16
Box = Tuple[float, float, float, float]


def class_borders(pred: np.ndarray, grid: int, cell: int) -> np.ndarray:
    """(grid * cell, grid * cell) bool: the pixel lines on both sides of
    every boundary between 4-adjacent tokens of different predicted class.
    """
    big = pred.reshape(grid, grid).repeat(cell, 0).repeat(cell, 1)
    edge = np.zeros(big.shape, bool)
    vert = big[:, 1:] != big[:, :-1]
    edge[:, 1:] |= vert
    edge[:, :-1] |= vert
    horiz = big[1:, :] != big[:-1, :]
    edge[1:, :] |= horiz
    edge[:-1, :] |= horiz
    return edge


def draw_correctness(img: Image.Image, correct: np.ndarray, grid: int,
                     cell: int, boxes: Sequence[Box] = (),
                     pred: Optional[np.ndarray] = None) -> Image.Image:
    """One ``grid * cell`` square panel.

    Args:
        img: the (square) RGB image the tokens came from.
        correct: (grid * grid,) bool per token, raster order.
        boxes: boxes in ``img``'s pixel frame, outlined.
        pred: (grid * grid,) predicted classes; borders between tokens of
            different class are drawn when given.
    """
    size = grid * cell
    base = np.asarray(img.resize((size, size), Image.BICUBIC), np.float32)
    colours = np.where(correct.reshape(grid, grid, 1), CORRECT, WRONG)
    layer = colours.repeat(cell, 0).repeat(cell, 1).astype(np.float32)
    out = ((1 - ALPHA) * base + ALPHA * layer).round().astype(np.uint8)
    if pred is not None:
        out[class_borders(pred, grid, cell)] = BORDER
    panel = Image.fromarray(out)
    if boxes:
        draw = ImageDraw.Draw(panel)
        scale = size / img.width
        for x0, y0, x1, y1 in boxes:
            draw.rectangle([x0 * scale, y0 * scale, x1 * scale - 1,
                            y1 * scale - 1], outline=BOX_COLOUR, width=2)
    return panel


@dataclass
class ProbePanel:
    """Where a panel lies and what it shows."""
    box: Tuple[int, int, int, int]  # left, top, right, bottom (exclusive)
    image: int
    schedule: str
    correct: np.ndarray  # (grid * grid,) bool
    pred: Optional[np.ndarray]  # (grid * grid,) classes, when drawn


def probe_grid_size(num_images: int, num_schedules: int,
                    panel: int) -> Tuple[int, int]:
    """(width, height) of :func:`compose_probe_grid`'s picture."""
    return (PAD + num_schedules * (panel + PAD),
            PAD + num_images * (TITLE + HEADER + panel + PAD))


def compose_probe_grid(images: Sequence[Image.Image],
                       titles: Sequence[str],
                       correct: Sequence[Sequence[np.ndarray]],
                       headers: Sequence[Sequence[Tuple[str, str]]],
                       boxes: Sequence[Sequence[Box]], grid: int,
                       cell: int,
                       preds: Optional[Sequence[Sequence[np.ndarray]]] = None
                       ) -> Tuple[Image.Image, List[ProbePanel]]:
    """Per image a title line, then per schedule a two-line header and the
    panel.

    Args:
        images: square RGB images.
        titles: one line per image (file and class).
        correct: ``correct[i][j]``: (grid * grid,) bool for image i,
            schedule j.
        headers: ``headers[i][j]``: two header lines (schedule, scores).
        boxes: per image, boxes in its pixel frame (may be empty).
        preds: ``preds[i][j]``: (grid * grid,) predicted classes, for the
            class borders (optional).
    """
    panel = grid * cell
    num_sched = len(correct[0]) if correct else 0
    canvas = Image.new('RGB', probe_grid_size(len(images), num_sched, panel),
                       BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    panels, top = [], PAD
    for i, img in enumerate(images):
        draw.text((PAD, top), titles[i], fill=(0, 0, 0), font=font)
        for j, ok in enumerate(correct[i]):
            pred = preds[i][j] if preds is not None else None
            left = PAD + j * (panel + PAD)
            y = top + TITLE
            draw.text((left, y), headers[i][j][0], fill=(0, 0, 0), font=font)
            draw.text((left, y + HEADER // 2), headers[i][j][1],
                      fill=(0, 0, 0), font=font)
            y += HEADER
            canvas.paste(
                draw_correctness(img, ok, grid, cell, boxes[i], pred),
                (left, y))
            panels.append(ProbePanel((left, y, left + panel, y + panel), i,
                                     headers[i][j][0], ok, pred))
        top += TITLE + HEADER + panel + PAD
    return canvas, panels
