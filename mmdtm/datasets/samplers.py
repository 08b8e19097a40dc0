"""A sampler that can start part-way through an epoch (exact resume)."""
import itertools
from typing import Iterator

from mmengine.dataset import DefaultSampler
from mmpretrain.registry import DATA_SAMPLERS


@DATA_SAMPLERS.register_module()
class ResumableSampler(DefaultSampler):
    """``DefaultSampler`` whose next pass can skip its first samples.

    Same order as ``DefaultSampler`` (a permutation seeded by
    ``seed + epoch``, padded to the world size, every ``world_size``-th
    index per rank). :meth:`skip` makes the next ``__iter__`` start at a
    given position of this rank's list, so that a resumed run continues
    with the very batch an uninterrupted run would have drawn, without
    loading the skipped images (``ResumableIterBasedTrainLoop`` uses it).

    Examples:
        >>> sampler = ResumableSampler(list(range(8)), shuffle=False, seed=0)
        >>> sampler.skip(5)
        >>> list(sampler), list(sampler)
        ([5, 6, 7], [0, 1, 2, 3, 4, 5, 6, 7])
    """

    _skip = 0

    def skip(self, num_samples: int) -> None:
        """Start the next pass at position ``num_samples`` (0 = the start)."""
        if not 0 <= num_samples <= self.num_samples:
            raise ValueError(f'skip: num_samples must be in [0, '
                             f'{self.num_samples}], got {num_samples}')
        self._skip = int(num_samples)

    def __iter__(self) -> Iterator[int]:
        indices = super().__iter__()
        skip, self._skip = self._skip, 0
        return itertools.islice(indices, skip, None) if skip else indices
