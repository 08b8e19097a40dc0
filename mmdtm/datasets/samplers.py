"""A sampler that can start part-way through an epoch (exact resume)."""
from typing import Iterator, Tuple

from mmengine.dataset import DefaultSampler

from mmdtm.registry import DATA_SAMPLERS


class SeededIndex(int):
    """A dataset index that also names its draw: ``seed_key`` is
    (sampler seed, epoch, rank, position in the rank's epoch).

    An ``int`` to the dataset; it travels to worker processes with the
    index, where :class:`~mmdtm.datasets.SeedPerSample` seeds the sample's
    augmentation from it.
    """

    seed_key: Tuple[int, int, int, int]

    def __new__(cls, value: int, seed_key: Tuple[int, int, int, int]):
        obj = super().__new__(cls, value)
        obj.seed_key = tuple(int(k) for k in seed_key)
        return obj

    def __reduce__(self):
        return SeededIndex, (int(self), self.seed_key)


@DATA_SAMPLERS.register_module()
class ResumableSampler(DefaultSampler):
    """``DefaultSampler`` whose next pass can skip its first samples.

    Same order as ``DefaultSampler`` (a permutation seeded by
    ``seed + epoch``, padded to the world size, every ``world_size``-th
    index per rank). :meth:`skip` makes the next ``__iter__`` start at a
    given position of this rank's list, so that a resumed run continues
    with the very batch an uninterrupted run would have drawn, without
    loading the skipped images (``ResumableIterBasedTrainLoop`` and
    ``ResumableEpochBasedTrainLoop`` use it).

    The indices are :class:`SeededIndex` objects: a pipeline that starts
    with ``SeedPerSample`` draws each sample's augmentation from (seed,
    epoch, rank, position), whichever worker process loads it.

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
        indices = list(super().__iter__())
        start, self._skip = self._skip, 0
        key = (self.seed, self.epoch, self.rank)
        return (SeededIndex(idx, key + (pos, ))
                for pos, idx in enumerate(indices[start:], start))
