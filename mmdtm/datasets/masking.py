"""BEiT block-wise masking as the DTM reference draws it."""
import math
import random
from typing import Optional, Sequence, Tuple, Union

import numpy as np
from mmcv.transforms import BaseTransform

from mmdtm.registry import TRANSFORMS

ATTEMPTS = 10  # tries to place one block before the fill-up (the reference)


@TRANSFORMS.register_module()
class BlockMaskGenerator(BaseTransform):
    """Block-wise mask of exactly ``num_masking_patches`` patches.

    The DTM reference's generator (naver-ai/dtm
    ``utils/masking_generator.py``, BEiT's): blocks of a random area in
    ``[min_num_patches, budget]`` and a log-uniform aspect ratio are placed
    one after the other; a block whose top-left corner can lie anywhere it
    fits, the last row and column included, is kept when it adds between 1
    and ``budget`` new patches (``budget`` = what is still missing, at most
    ``max_num_patches``). After :data:`ATTEMPTS` failed tries the remaining
    patches are drawn uniformly among the unmasked ones, so the count is
    always exact.

    MMPretrain's ``BEiTMaskGenerator`` differs in two ways: it places blocks
    with numpy's exclusive ``randint(0, H - h)``, so the last row and column
    are never masked, and it retries blocks until the count is reached
    instead of filling up.

    Randomness comes from Python's ``random`` (blocks) and numpy's global
    RNG (fill-up), as in the reference, so ``SeedPerSample`` seeds it.

    **Added keys:** ``mask`` (np.ndarray of int, shape (H, W), 1 = masked).

    Args:
        input_size: Patch grid (H, W), or an int for a square grid.
        num_masking_patches: Patches masked in every mask.
        min_num_patches: Smallest block area drawn. Defaults to 4.
        max_num_patches: Largest number of new patches one block may add
            (``None``: ``num_masking_patches``).
        min_aspect: Smallest block aspect ratio h / w. Defaults to 0.3.
        max_aspect: Largest aspect ratio (``None``: ``1 / min_aspect``).

    Examples:
        >>> gen = BlockMaskGenerator(14, num_masking_patches=75,
        ...                          min_num_patches=16)
        >>> int(gen({})['mask'].sum())
        75
    """

    def __init__(self,
                 input_size: Union[int, Sequence[int]],
                 num_masking_patches: int,
                 min_num_patches: int = 4,
                 max_num_patches: Optional[int] = None,
                 min_aspect: float = 0.3,
                 max_aspect: Optional[float] = None) -> None:
        if isinstance(input_size, int):
            input_size = (input_size, input_size)
        self.height, self.width = (int(s) for s in input_size)
        if self.height < 1 or self.width < 1:
            raise ValueError(f'BlockMaskGenerator: input_size must be '
                             f'positive, got {tuple(input_size)}')
        if not 0 <= num_masking_patches <= self.height * self.width:
            raise ValueError(
                f'BlockMaskGenerator: num_masking_patches must be in [0, '
                f'{self.height * self.width}] for a {self.height}x'
                f'{self.width} grid, got {num_masking_patches}')
        if min_num_patches < 1:
            raise ValueError(f'BlockMaskGenerator: min_num_patches must be '
                             f'>= 1, got {min_num_patches}')
        if max_num_patches is not None and max_num_patches < 1:
            raise ValueError(f'BlockMaskGenerator: max_num_patches must be '
                             f'>= 1 or None, got {max_num_patches}')
        if min_aspect <= 0 or (max_aspect is not None and max_aspect <= 0):
            raise ValueError(f'BlockMaskGenerator: min_aspect / max_aspect '
                             f'must be positive, got {min_aspect} / '
                             f'{max_aspect}')
        self.num_masking_patches = num_masking_patches
        self.min_num_patches = min_num_patches
        self.max_num_patches = (num_masking_patches if max_num_patches is None
                                else max_num_patches)
        max_aspect = max_aspect or 1 / min_aspect
        self.log_aspect_ratio: Tuple[float, float] = (math.log(min_aspect),
                                                      math.log(max_aspect))

    def _add_block(self, mask: np.ndarray, budget: int) -> int:
        """Place one block on ``mask`` (H, W) in place; the number of
        patches it newly masked (0: no block fitted in ``ATTEMPTS`` tries)."""
        for _ in range(ATTEMPTS):
            area = random.uniform(self.min_num_patches, budget)
            aspect = math.exp(random.uniform(*self.log_aspect_ratio))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if h >= self.height or w >= self.width:
                continue
            top = random.randint(0, self.height - h)  # inclusive bounds
            left = random.randint(0, self.width - w)
            block = mask[top:top + h, left:left + w]
            new = h * w - int(block.sum())
            if 0 < new <= budget:
                block[...] = 1
                return new
        return 0

    def generate(self) -> np.ndarray:
        """One mask, shape (H, W), exactly ``num_masking_patches`` ones."""
        mask = np.zeros((self.height, self.width), dtype=int)
        count = 0
        while count < self.num_masking_patches:
            budget = min(self.num_masking_patches - count,
                         self.max_num_patches)
            new = self._add_block(mask, budget)
            if new == 0:
                break
            count += new
        missing = self.num_masking_patches - count  # >= 0: blocks <= budget
        if missing:
            free = np.flatnonzero(mask == 0)  # row-major, as the reference
            mask.flat[free[np.random.choice(free.size, missing,
                                            replace=False)]] = 1
        return mask

    def transform(self, results: dict) -> dict:
        results['mask'] = self.generate()
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(input_size=({self.height}, '
                f'{self.width}), num_masking_patches='
                f'{self.num_masking_patches}, min_num_patches='
                f'{self.min_num_patches}, max_num_patches='
                f'{self.max_num_patches}, log_aspect_ratio='
                f'{self.log_aspect_ratio})')
