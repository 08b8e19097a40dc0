"""BlockMaskGenerator draws the DTM reference's block masks."""
import math
import random

import numpy as np
import pytest
from mmengine.registry import DefaultScope
from mmpretrain.datasets.transforms import BEiTMaskGenerator

from mmdtm.datasets import BlockMaskGenerator
from mmdtm.registry import TRANSFORMS

GRID, COUNT, MIN_BLOCK = 14, 75, 16  # the pre-training configs'
DRAWS = 3000
EDGE = np.zeros((GRID, GRID), bool)
EDGE[-1, :] = EDGE[:, -1] = True  # last row and column: 27 positions


def described_masks(num: int, seed: int) -> np.ndarray:
    """(num, GRID, GRID) masks drawn as the reference's generator is
    described, independently of the class under test: a block's area is
    uniform in [16, budget], its aspect ratio log-uniform in [0.3, 1/0.3];
    a block of h x w (rounded) with h, w below the grid size goes anywhere
    it fits, every corner equally likely; it is kept if it adds 1 to
    budget new patches (budget = what is missing, at most 75); a block
    not kept within 10 tries ends the placing, and the missing patches are
    then drawn uniformly among the free ones."""
    rng = np.random.default_rng(seed)
    lo, hi = math.log(0.3), math.log(1 / 0.3)
    out = np.zeros((num, GRID, GRID), bool)
    for k in range(num):
        masked = set()
        stuck = False
        while len(masked) < COUNT and not stuck:
            budget = COUNT - len(masked)
            stuck = True
            for _ in range(10):
                area = MIN_BLOCK + (budget - MIN_BLOCK) * rng.random()
                ratio = math.exp(rng.uniform(lo, hi))
                h = round(math.sqrt(area * ratio))
                w = round(math.sqrt(area / ratio))
                if h >= GRID or w >= GRID:
                    continue
                top = rng.integers(GRID - h + 1)
                left = rng.integers(GRID - w + 1)
                new = {(top + i, left + j) for i in range(h)
                       for j in range(w)} - masked
                if 0 < len(new) <= budget:
                    masked |= new
                    stuck = False
                    break
        free = sorted({(i, j) for i in range(GRID)
                       for j in range(GRID)} - masked)
        for p in rng.choice(len(free), COUNT - len(masked), replace=False):
            masked.add(free[p])
        rows, cols = zip(*masked)
        out[k, list(rows), list(cols)] = True
    return out


def draw(generator, num: int) -> np.ndarray:
    return np.stack([generator.transform({})['mask'] for _ in range(num)])


@pytest.fixture(scope='module')
def frequencies():
    """Per-position masking frequency: ours, the description's, and
    MMPretrain's BEiTMaskGenerator (same settings, seeded)."""
    random.seed(1)
    np.random.seed(1)
    kw = dict(input_size=(GRID, GRID), num_masking_patches=COUNT,
              min_num_patches=MIN_BLOCK)
    ours = draw(BlockMaskGenerator(**kw), DRAWS)
    theirs = draw(BEiTMaskGenerator(**kw, max_num_patches=COUNT), DRAWS)
    described = described_masks(DRAWS, seed=2)
    return ours, described.mean(0), theirs.mean(0)


def test_exactly_75_and_every_position(frequencies):
    ours, _, _ = frequencies
    assert ours.shape == (DRAWS, GRID, GRID)
    assert set(np.unique(ours)) == {0, 1}
    assert np.all(ours.reshape(DRAWS, -1).sum(1) == COUNT)
    freq = ours.mean(0)
    assert freq.min() > 0.02  # corners ~0.04: the last row and column too
    assert freq[EDGE].mean() == pytest.approx(0.14, abs=0.02)


def test_frequency_matches_the_description(frequencies):
    ours, described, theirs = frequencies
    freq = ours.mean(0)
    # per position: 3000 draws each, std of the difference <= 0.013
    assert np.abs(freq - described).max() < 0.06
    assert freq[EDGE].mean() == pytest.approx(described[EDGE].mean(),
                                              abs=0.015)
    # the same comparison catches MMPretrain's exclusive placement: its
    # last row and column are never masked, its centre more often
    assert np.all(theirs[EDGE] == 0)
    assert np.abs(theirs - described).max() > 0.1
    assert theirs[6:8, 6:8].mean() > described[6:8, 6:8].mean() + 0.04


@pytest.mark.parametrize('size,count,min_block,max_block', [
    ((14, 14), 196, 16, None),  # the fill-up must finish it
    ((14, 14), 0, 16, None),
    ((4, 4), 6, 2, 6),  # the toy config's
    ((8, 5), 17, 4, 3),  # blocks smaller than the minimum area
])
def test_count_is_always_exact(size, count, min_block, max_block):
    gen = BlockMaskGenerator(size, count, min_num_patches=min_block,
                             max_num_patches=max_block)
    masks = draw(gen, 200)
    assert masks.shape == (200, ) + size
    assert np.all(masks.reshape(200, -1).sum(1) == count)


def test_seeded_draws_repeat():
    gen = BlockMaskGenerator(14, 75, min_num_patches=16)
    random.seed(5)
    np.random.seed(5)
    first = draw(gen, 5)
    random.seed(5)
    np.random.seed(5)
    assert np.array_equal(first, draw(gen, 5))


def test_registered_and_checked():
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        gen = TRANSFORMS.build(dict(type='BlockMaskGenerator',
                                    input_size=(14, 14),
                                    num_masking_patches=75))
    assert isinstance(gen, BlockMaskGenerator)
    assert 'num_masking_patches=75' in repr(gen)
    with pytest.raises(ValueError, match='num_masking_patches'):
        BlockMaskGenerator(14, 197)
    with pytest.raises(ValueError, match='min_num_patches'):
        BlockMaskGenerator(14, 75, min_num_patches=0)
    with pytest.raises(ValueError, match='max_num_patches'):
        BlockMaskGenerator(14, 75, max_num_patches=0)
    with pytest.raises(ValueError, match='input_size'):
        BlockMaskGenerator((0, 14), 0)
