"""Seed each sample's augmentation from its place in the sampler's order."""
import random

import numpy as np
import torch
from mmcv.transforms import BaseTransform

from mmdtm.registry import TRANSFORMS


def sample_seed(seed_key) -> int:
    """A 32-bit seed that depends on nothing but ``seed_key``."""
    state = np.random.SeedSequence([int(k) % 2**63 for k in seed_key])
    return int(state.generate_state(1, np.uint32)[0])


@TRANSFORMS.register_module()
class SeedPerSample(BaseTransform):
    """Seed python ``random``, numpy and torch's CPU RNG for this sample.

    Put it first in the pipeline. With :class:`ResumableSampler`, each index
    carries (sampler seed, epoch, rank, position), so the crops, flips,
    colour jitter and masks of a sample are a function of its place in the
    data order: the same in a resumed run, with any ``num_workers`` (worker
    RNG states cannot be saved; this makes saving them unnecessary). With
    another sampler (plain ``int`` indices) it does nothing.

    Note that the global RNGs of the process that runs the pipeline are
    reseeded, which is the main process when ``num_workers=0``.
    """

    def transform(self, results: dict) -> dict:
        key = getattr(results.get('sample_idx'), 'seed_key', None)
        if key is not None:
            seed = sample_seed(key)
            random.seed(seed)
            np.random.seed(seed)
            torch.default_generator.manual_seed(seed)
        return results
