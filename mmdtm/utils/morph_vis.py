"""Draw the partition that DTM's morphing finds on an image.

For an image and a teacher, :func:`morphing_grid` computes the teacher's
patch targets once, runs :func:`mmdtm.morphing.bipartite_partition` for
several schedules and draws, per schedule, two panels: the image tinted with
one colour per group, and the flat group map. Group borders are drawn in
black (``BORDER``); every group has its own colour, never black, so the number
of distinct non-black colours of a flat panel is the number of groups.
"""
import math
import os
import os.path as osp
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from mmdtm.morphing import bipartite_partition

BORDER = (0, 0, 0)
BACKGROUND = (255, 255, 255)
PAD = 6
HEADER = 30
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class Schedule:
    """``iters`` rounds of ``r`` merges (``r = 0``: identity partition)."""
    r: int
    iters: int

    @property
    def name(self) -> str:
        return 'identity' if self.r == 0 or self.iters == 0 else \
            f'r={self.r} x {self.iters}'


def parse_schedule(text: str) -> Schedule:
    """``'identity'`` or ``'RxK'`` (e.g. ``'16x4'``) -> :class:`Schedule`."""
    if text.strip().lower() in ('identity', 'none', '0'):
        return Schedule(0, 0)
    try:
        r, iters = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise ValueError(f"schedule {text!r}: expected 'identity' or 'RxK' "
                         f"such as '16x4' (K rounds of R merges)") from None
    if r < 0 or iters < 0:
        raise ValueError(f'schedule {text!r}: R and K must be >= 0')
    return Schedule(r, iters)


def default_schedules(num_tokens: int) -> List[Schedule]:
    """identity, 16x4, 49x2, 90x2 for 196 tokens, scaled to ``num_tokens``."""
    scale = num_tokens / 196
    return [Schedule(0, 0)] + [
        Schedule(max(1, round(r * scale)), k)
        for r, k in ((16, 4), (49, 2), (90, 2))]


def palette(num: int, seed: int = 0) -> np.ndarray:
    """(num, 3) uint8: distinct, non-grey colours (never the black border)."""
    levels = 3
    while levels ** 3 - levels < num:
        levels += 1
    steps = np.linspace(60, 255, levels).round().astype(np.uint8)
    cube = np.stack(np.meshgrid(steps, steps, steps, indexing='ij'),
                    -1).reshape(-1, 3)
    cube = cube[~((cube == cube[:, :1]).all(1))]  # no greys, no white
    order = np.random.default_rng(seed).permutation(len(cube))
    return cube[order[:num]]


def crop_geometry(width: int, height: int,
                  size: int) -> Tuple[int, int, int, int]:
    """How :func:`load_image` maps a ``width`` x ``height`` image: resized to
    ``(w, h)`` (shorter side ``size``), then the square at ``(left, top)``
    kept. Returns ``(w, h, left, top)``."""
    scale = size / min(width, height)
    w, h = max(size, round(width * scale)), max(size, round(height * scale))
    return w, h, (w - size) // 2, (h - size) // 2


def load_image(path: str, size: int) -> Image.Image:
    """RGB image, shorter side resized to ``size``, centre-cropped square."""
    img = Image.open(path).convert('RGB')
    w, h, left, top = crop_geometry(img.width, img.height, size)
    img = img.resize((w, h), Image.BICUBIC)
    return img.crop((left, top, left + size, top + size))


def teacher_tokens(teacher: torch.nn.Module, img: Image.Image,
                   mean: Sequence[float] = IMAGENET_MEAN,
                   std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """The teacher's (1, N, D) patch targets for one RGB image.

    The image is normalised like the data preprocessor does (0-255 scale
    ``mean``/``std``); the teacher's own ``input_norm`` applies on top.
    """
    x = torch.from_numpy(np.asarray(img, np.float32)).permute(2, 0, 1)
    x = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(
        3, 1, 1)
    device = next(iter(teacher.buffers()), torch.empty(0)).device
    with torch.no_grad():
        return teacher(x.unsqueeze(0).to(device)).float().cpu()


def draw_partition(img: Image.Image, groups: np.ndarray, grid: int,
                   flat: bool, cell: int) -> Image.Image:
    """One panel of ``grid * cell`` pixels.

    Args:
        img: the RGB image (any size; resized to the panel).
        groups: (grid * grid,) group ids in raster order.
        flat: ``True``: group colours only; ``False``: the image tinted.
        cell: pixels per patch side (>= 4 keeps every group visible).
    """
    colours = palette(int(groups.max()) + 1)
    ids = groups.reshape(grid, grid)
    size = grid * cell
    layer = colours[ids].repeat(cell, 0).repeat(cell, 1)  # (S, S, 3)
    if not flat:
        base = np.asarray(img.resize((size, size), Image.BICUBIC), np.float32)
        layer = (0.6 * base + 0.4 * layer).round().astype(np.uint8)
    layer = layer.copy()
    big = ids.repeat(cell, 0).repeat(cell, 1)
    edge = np.zeros((size, size), bool)
    vert = big[:, 1:] != big[:, :-1]  # a border between columns j and j+1
    edge[:, 1:] |= vert
    edge[:, :-1] |= vert
    horiz = big[1:, :] != big[:-1, :]
    edge[1:, :] |= horiz
    edge[:-1, :] |= horiz
    layer[edge] = BORDER
    return Image.fromarray(layer)


@dataclass
class Panel:
    """Where a panel lies in the grid and what it shows."""
    box: Tuple[int, int, int, int]  # left, top, right, bottom (exclusive)
    schedule: Schedule
    num_groups: int
    flat: bool
    groups: np.ndarray  # (grid * grid,) group id of every patch


def grid_size(num_images: int, num_schedules: int,
              panel: int) -> Tuple[int, int]:
    """(width, height) of :func:`compose_grid`'s picture."""
    return (PAD + num_schedules * (panel + PAD),
            num_images * (HEADER + 2 * (panel + PAD)) + PAD)


def compose_grid(images: Sequence[Image.Image], groups: Sequence[Sequence[
        np.ndarray]], schedules: Sequence[Schedule], grid: int,
                 cell: int) -> Tuple[Image.Image, List[Panel]]:
    """Per image: a header with the schedule and group count per column,
    a row of tinted images and a row of flat group maps."""
    panel = grid * cell
    width, height = grid_size(len(images), len(schedules), panel)
    canvas = Image.new('RGB', (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    panels, top = [], PAD
    for img, img_groups in zip(images, groups):
        for col, (sched, ids) in enumerate(zip(schedules, img_groups)):
            left = PAD + col * (panel + PAD)
            count = int(ids.max()) + 1
            draw.text((left, top), sched.name, fill=(0, 0, 0), font=font)
            draw.text((left, top + HEADER // 2), f'{count} groups',
                      fill=(0, 0, 0), font=font)
            for row, flat in enumerate((False, True)):
                y = top + HEADER + row * (panel + PAD)
                canvas.paste(draw_partition(img, ids, grid, flat, cell),
                             (left, y))
                panels.append(Panel((left, y, left + panel, y + panel),
                                    sched, count, flat, ids))
        top += HEADER + 2 * (panel + PAD)
    return canvas, panels


def morphing_grid(teacher: torch.nn.Module,
                  image_paths: Sequence[str],
                  schedules: Optional[Sequence[Schedule]] = None,
                  out_file: Optional[str] = None,
                  panel_size: int = 224,
                  protect_first: bool = True,
                  split: str = 'alternate',
                  mean: Sequence[float] = IMAGENET_MEAN,
                  std: Sequence[float] = IMAGENET_STD,
                  seed: int = 0) -> Tuple[Image.Image, List[Panel]]:
    """Partition each image with ``teacher`` for every schedule and draw it.

    Args:
        teacher: a frozen target generator (its ``input_size`` and
            ``num_patches`` give the input size and the patch grid).
        image_paths: image files.
        schedules: default :func:`default_schedules` for the patch count.
        out_file: write the PNG here when given.
        panel_size: approximate panel side in pixels (rounded to whole
            patches).
        protect_first, split: as in ``bipartite_partition``.
        seed: for ``split='random'``.

    Returns:
        The picture and its panels (boxes, schedules, group counts).
    """
    n = teacher.num_patches
    grid = math.isqrt(n)
    if grid * grid != n:
        raise ValueError(f'the teacher has {n} patches, not a square grid')
    size = getattr(teacher, 'input_size', None) or teacher.teacher.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    schedules = list(schedules or default_schedules(n))
    images, groups = [], []
    gen = torch.Generator().manual_seed(seed)
    for path in image_paths:
        img = load_image(path, size)
        tokens = teacher_tokens(teacher, img, mean, std)
        img_groups = []
        for sched in schedules:
            ids = bipartite_partition(tokens, r=sched.r, iters=sched.iters,
                                      protect_first=protect_first,
                                      split=split, generator=gen)
            img_groups.append(ids[0].numpy())
        images.append(img)
        groups.append(img_groups)
    cell = max(4, round(panel_size / grid))
    canvas, panels = compose_grid(images, groups, schedules, grid, cell)
    if out_file:
        os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
        canvas.save(out_file)
    return canvas, panels
