"""The DTM paper's pilot study: how spatially consistent are CLIP's per-token
zero-shot predictions, with and without morphing?

Per image and morphing schedule: the teacher's patch tokens (exactly the
DTM targets, :class:`CLIPTargetGenerator`) are replaced by their group means
under the schedule's partition (:func:`bipartite_partition` +
:func:`group_mean`, computed on those tokens as in training), then every
token is classified zero-shot (:mod:`mmdtm.analysis.zero_shot`). Scores
(:mod:`mmdtm.analysis.consistency`):

* token accuracy: share of tokens (inside the object's box when boxes are
  given) predicting the image's label, averaged over images;
* neighbour agreement: share of 4-adjacent token pairs with the same
  prediction, averaged over images;
* image accuracy: share of images whose tokens' majority vote is the label.
"""
import math
import os.path as osp
import sys
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from mmdtm.morphing import bipartite_partition, count_groups, group_mean
from mmdtm.visualization.morph_vis import (IMAGENET_MEAN, IMAGENET_STD,
                                           Schedule, load_image,
                                           teacher_tokens)
from .consistency import majority_vote, neighbour_agreement, token_accuracy
from .consistency_vis import compose_probe_grid
from .probe_data import Sample
from .voc_boxes import boxes_in_crop, check_belongs, read_voc_xml, token_mask
from .zero_shot import classify_tokens


@dataclass
class TokenResult:
    """One image under one schedule."""
    pred: Tensor  # (N,) int64 predicted class per token
    groups: int
    token_accuracy: float
    neighbour_agreement: float
    vote: int


def morphed_predictions(tokens: Tensor, text: Tensor,
                        schedule: Schedule,
                        protect_first: bool = True,
                        split: str = 'alternate',
                        generator: Optional[torch.Generator] = None
                        ) -> Tuple[Tensor, int]:
    """Per-token predictions after morphing.

    Args:
        tokens: (1, N, D) projected teacher tokens.
        text: (C, D) class embeddings.
        schedule: ``iters`` rounds of ``r`` merges (identity: none).

    Returns:
        ``(pred, G)``: (N,) int64 classes and the number of groups.
    """
    n = tokens.shape[1]
    if schedule.r == 0 or schedule.iters == 0:
        return classify_tokens(tokens, text)[0], n
    groups = bipartite_partition(tokens, r=schedule.r, iters=schedule.iters,
                                 protect_first=protect_first, split=split,
                                 generator=generator)
    g = count_groups(groups)
    return classify_tokens(group_mean(tokens, groups, g), text)[0], g


def score_image(pred: Tensor, groups: int, label: int,
                inside: Optional[Tensor], num_classes: int) -> TokenResult:
    return TokenResult(pred, groups, token_accuracy(pred, label, inside),
                       neighbour_agreement(pred),
                       majority_vote(pred, num_classes))


def _finite(x: float) -> Optional[float]:
    return None if x is None or math.isnan(x) else float(x)


def _mean(values: Sequence[float]) -> Optional[float]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else None


@dataclass
class ShownImage:
    """What the picture draws of one scored image."""
    image: Image.Image  # the square image the teacher saw
    title: str  # file and class
    label: int
    boxes: list  # the object boxes in the image's pixel frame (may be [])
    results: Sequence[TokenResult]  # one per schedule


def _box_mask(sample: Sample, boxes_dir: Optional[str], size: int,
              grid: int) -> Tuple[Optional[Tensor], list]:
    """``(inside, boxes)``: the (grid * grid,) bool tokens inside the
    sample's boxes (None without ``boxes_dir``) and the boxes in the
    teacher's crop."""
    if boxes_dir is None:
        return None, []
    stem = osp.splitext(osp.basename(sample.path))[0]
    ann = read_voc_xml(osp.join(boxes_dir, stem + '.xml'))
    with Image.open(sample.path) as raw:
        check_belongs(ann, sample.path, raw.size)
    crop_boxes = boxes_in_crop(ann.boxes, ann.size, size)
    return token_mask(crop_boxes, size, grid), crop_boxes


def _summary(images: Sequence[dict],
             schedules: Sequence[Schedule]) -> Dict[str, dict]:
    """Per schedule, the per-image scores averaged over the images."""
    summary = {}
    for sched in schedules:
        rows = [e['scores'][sched.name] for e in images]
        summary[sched.name] = dict(
            r=sched.r, iters=sched.iters,
            groups=_mean([r['groups'] for r in rows]),
            token_accuracy=_mean([r['token_accuracy'] for r in rows]),
            neighbour_agreement=_mean(
                [r['neighbour_agreement'] for r in rows]),
            image_accuracy=_mean([float(r['correct']) for r in rows]),
            images_scored=sum(r['token_accuracy'] is not None for r in rows))
    return summary


def score_probe(teacher: torch.nn.Module,
                text: Tensor,
                samples: Sequence[Sample],
                class_names: Sequence[str],
                schedules: Sequence[Schedule],
                boxes_dir: Optional[str] = None,
                protect_first: bool = True,
                split: str = 'alternate',
                seed: int = 0,
                keep: int = 8,
                mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD,
                progress: bool = True) -> Tuple[dict, list]:
    """Score every sample under every schedule.

    Args:
        teacher: a :class:`CLIPTargetGenerator` with ``projected=True``.
        text: (C, D) class embeddings for ``class_names``.
        samples: images with labels.
        schedules: morphing schedules (put ``identity`` first for the
            picture's reference column).
        boxes_dir: folder of Pascal VOC XML files, ``<image stem>.xml``; every
            sample must have one. ``None``: token accuracy over all tokens.
        protect_first / split: as in training (``bipartite_partition``).
        seed: for ``split='random'``.
        keep: how many images (the first) to return for the picture.

    Returns:
        ``(report, shown)``: a JSON-ready dict (``summary`` per schedule and
        per-image ``images``) and the first ``keep`` :class:`ShownImage`.
    """
    n = teacher.num_patches
    grid = math.isqrt(n)
    if grid * grid != n:
        raise ValueError(f'the teacher has {n} patches, not a square grid')
    if len(class_names) != text.shape[0]:
        raise ValueError(f'{len(class_names)} class names but '
                         f'{text.shape[0]} text embeddings')
    size = teacher.input_size  # (H, W) the teacher runs at
    size = size[0] if isinstance(size, (tuple, list)) else size
    gen = torch.Generator().manual_seed(seed)
    bar = None
    if progress:
        from mmengine.utils import ProgressBar
        bar = ProgressBar(len(samples), file=sys.stderr)
    images, shown = [], []
    for idx, sample in enumerate(samples):
        inside, crop_boxes = _box_mask(sample, boxes_dir, size, grid)
        img = load_image(sample.path, size)
        tokens = teacher_tokens(teacher, img, mean, std)
        entry = dict(path=sample.path, label=sample.label,
                     class_name=class_names[sample.label],
                     tokens_in_box=None if inside is None else
                     int(inside.sum()), scores={})
        results = []
        for sched in schedules:
            pred, g = morphed_predictions(tokens, text, sched, protect_first,
                                          split, gen)
            res = score_image(pred, g, sample.label, inside,
                              len(class_names))
            results.append(res)
            entry['scores'][sched.name] = dict(
                groups=g, token_accuracy=_finite(res.token_accuracy),
                neighbour_agreement=_finite(res.neighbour_agreement),
                vote=res.vote, vote_class=class_names[res.vote],
                correct=res.vote == sample.label)
        images.append(entry)
        if idx < keep:
            shown.append(ShownImage(
                img, f'{osp.basename(sample.path)}: '
                f'{class_names[sample.label]}', sample.label, crop_boxes,
                results))
        if bar is not None:
            bar.update()
    if bar is not None:
        sys.stderr.write('\n')
    report = dict(num_images=len(images), num_classes=len(class_names),
                  grid=grid, boxes=boxes_dir is not None,
                  protect_first=protect_first, split=split,
                  schedules=[s.name for s in schedules],
                  summary=_summary(images, schedules), images=images)
    return report, shown


def probe_picture(shown: Sequence[ShownImage],
                  schedules: Sequence[Schedule], grid: int,
                  panel_size: int = 224) -> tuple:
    """``(picture, panels)``: per shown image and schedule, its tokens
    coloured right / wrong with class borders and the object boxes
    (:func:`compose_probe_grid`); ``(None, [])`` for no image."""
    if not shown:
        return None, []
    headers = [[(f'{s.name} ({r.groups} groups)',
                 f'tok {_pct(r.token_accuracy)} nb '
                 f'{_pct(r.neighbour_agreement)}')
                for s, r in zip(schedules, item.results)] for item in shown]
    return compose_probe_grid(
        [item.image for item in shown], [item.title for item in shown],
        [[(r.pred == item.label).numpy() for r in item.results]
         for item in shown], headers, [item.boxes for item in shown], grid,
        max(4, round(panel_size / grid)),
        [[r.pred.numpy() for r in item.results] for item in shown])


def run_probe(teacher: torch.nn.Module,
              text: Tensor,
              samples: Sequence[Sample],
              class_names: Sequence[str],
              schedules: Sequence[Schedule],
              vis_num: int = 8,
              panel_size: int = 224,
              **kwargs) -> tuple:
    """:func:`score_probe` (``kwargs``: its options), then
    :func:`probe_picture` of the first ``vis_num`` images.

    Returns:
        ``(report, picture, panels)``: the report, the PIL picture (``None``
        when ``vis_num`` is 0) and its panels.
    """
    report, shown = score_probe(teacher, text, samples, class_names,
                                schedules, keep=vis_num, **kwargs)
    picture, panels = probe_picture(shown, schedules, report['grid'],
                                    panel_size)
    return report, picture, panels


def _pct(x: Optional[float]) -> str:
    return '  n/a' if x is None or math.isnan(x) else f'{100 * x:.1f}%'


def format_table(summary: Dict[str, dict]) -> str:
    """The summary as a fixed-width table (percentages)."""
    head = (f'{"schedule":<16}{"groups":>8}{"token acc":>12}'
            f'{"neighbour agr":>15}{"image acc":>11}')
    lines = [head, '-' * len(head)]
    for name, row in summary.items():
        lines.append(f'{name:<16}{row["groups"]:>8.1f}'
                     f'{_pct(row["token_accuracy"]):>12}'
                     f'{_pct(row["neighbour_agreement"]):>15}'
                     f'{_pct(row["image_accuracy"]):>11}')
    return '\n'.join(lines)
