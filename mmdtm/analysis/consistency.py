"""The three scores of the spatial-consistency probe, per image.

Inputs are per-token class predictions in raster order over a square
``grid x grid`` patch grid. Pure functions; no model involved.
"""
import math
from typing import Optional

import torch
from torch import Tensor


def token_accuracy(pred: Tensor, label: int,
                   inside: Optional[Tensor] = None) -> float:
    """Share of tokens predicting ``label``.

    Args:
        pred: (N,) int64 predicted class per token.
        label: the image's class.
        inside: (N,) bool, the tokens to count (those inside the object's
            box); ``None`` counts every token.

    Returns:
        A float in [0, 1]; ``nan`` when ``inside`` selects no token.

    Examples:
        >>> token_accuracy(torch.tensor([3, 3, 1, 3]), 3)
        0.75
    """
    hits = pred == label
    if inside is not None:
        if inside.shape != pred.shape:
            raise ValueError(f'inside has shape {tuple(inside.shape)}, pred '
                             f'{tuple(pred.shape)}')
        hits = hits[inside]
    return int(hits.sum()) / hits.numel() if hits.numel() else math.nan


def _as_grid(pred: Tensor) -> Tensor:
    if pred.dim() == 2:
        return pred
    grid = math.isqrt(pred.numel())
    if pred.dim() != 1 or grid * grid != pred.numel():
        raise ValueError(f'pred must be (N,) with N a square or (H, W), got '
                         f'{tuple(pred.shape)}')
    return pred.view(grid, grid)


def neighbour_agreement(pred: Tensor) -> float:
    """Share of 4-adjacent token pairs (left-right and up-down) whose
    predictions agree.

    Args:
        pred: (H, W) predictions, or (N,) in raster order of a square grid.

    Returns:
        A float in [0, 1] over the ``H*(W-1) + (H-1)*W`` pairs (``nan`` for a
        single token).

    Examples:
        >>> neighbour_agreement(torch.tensor([[0, 0], [0, 1]]))
        0.5
    """
    grid = _as_grid(pred)
    same = torch.cat([(grid[:, 1:] == grid[:, :-1]).flatten(),
                      (grid[1:, :] == grid[:-1, :]).flatten()])
    return int(same.sum()) / same.numel() if same.numel() else math.nan


def majority_vote(pred: Tensor, num_classes: Optional[int] = None) -> int:
    """The class most tokens predict; a tie goes to the smallest class index.

    Examples:
        >>> majority_vote(torch.tensor([4, 2, 4, 2, 7]))
        2
    """
    counts = torch.bincount(pred.flatten(), minlength=num_classes or 0)
    return int(counts.argmax())  # argmax returns the first maximum
