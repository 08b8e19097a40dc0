"""Bad images name the file (or are skipped); sampler skip and seeds."""
import logging
import os.path as osp
import pickle
import random

import numpy as np
import pytest
import torch
from mmengine.dataset import DefaultSampler
from mmengine.logging import MMLogger
from mmpretrain.registry import DATASETS

from mmdtm.datasets import (CorruptImageError, ResumableSampler,
                            SafeLoadImageFromFile, SeededIndex,
                            SeedPerSample)

from ..conftest import make_image_folder, toy_config


def folder_with_bad_images(root):
    make_image_folder(root, num=6)
    truncated = osp.join(root, 'img_002.jpg')
    with open(truncated, 'rb') as f:
        payload = f.read()
    with open(truncated, 'wb') as f:
        f.write(payload[:len(payload) // 2])
    garbage = osp.join(root, 'img_004.jpg')
    with open(garbage, 'wb') as f:
        f.write(b'not an image at all')
    return truncated, garbage


def toy_dataset(tmp_path, root, on_error):
    cfg = toy_config(str(tmp_path / 'work'), root, max_iters=4)
    ds = cfg.train_dataloader.dataset
    i = [t['type'] for t in ds.pipeline].index('SafeLoadImageFromFile')
    ds.pipeline[i] = dict(type='SafeLoadImageFromFile', on_error=on_error)
    return DATASETS.build(ds)


def test_truncated_image_error_names_the_file(tmp_path):
    truncated, garbage = folder_with_bad_images(str(tmp_path / 'data'))
    dataset = toy_dataset(tmp_path, str(tmp_path / 'data'), 'raise')
    bad = {}
    for i in range(len(dataset)):
        try:
            dataset[i]
        except CorruptImageError as err:
            bad[dataset.get_data_info(i)['img_path']] = str(err)
    assert sorted(bad) == [truncated, garbage]
    assert f'cannot load image {truncated}' in bad[truncated]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_bad_images_skipped_counted_and_logged(tmp_path):
    truncated, garbage = folder_with_bad_images(str(tmp_path / 'data'))
    dataset = toy_dataset(tmp_path, str(tmp_path / 'data'), 'skip')
    loader, = [t for t in dataset.pipeline.transforms
               if isinstance(t, SafeLoadImageFromFile)]
    records = _Records()
    logger = MMLogger.get_current_instance()
    logger.addHandler(records)
    try:
        samples = [dataset[i] for i in range(len(dataset))]
    finally:
        logger.removeHandler(records)
    assert all(s['inputs'].shape[-2:] == (64, 64) for s in samples)
    log = '\n'.join(records.lines)
    assert f'skipped {truncated}' in log and f'skipped {garbage}' in log
    # every skip is counted and logged (a refetch may hit a bad file again)
    skips = loader.num_skipped
    assert skips >= 2 and log.count('SafeLoadImageFromFile: skipped') == skips
    assert f'{skips} image(s) skipped so far' in log


def test_safe_loader_rejects_bad_on_error():
    with pytest.raises(ValueError, match='on_error'):
        SafeLoadImageFromFile(on_error='ignore')


def test_resumable_sampler_matches_default_sampler():
    data = list(range(11))
    ref = DefaultSampler(data, shuffle=True, seed=4)
    ours = ResumableSampler(data, shuffle=True, seed=4)
    for epoch in range(3):
        ref.set_epoch(epoch)
        ours.set_epoch(epoch)
        full = list(ref)
        assert list(ours) == full
        ours.skip(3)
        assert list(ours) == full[3:]
        assert list(ours) == full  # the skip applies to one pass only
    with pytest.raises(ValueError, match='num_samples'):
        ours.skip(12)


def test_sampler_indices_carry_their_seed_key_to_the_pipeline():
    sampler = ResumableSampler(list(range(6)), shuffle=True, seed=9)
    sampler.set_epoch(2)
    sampler.skip(4)
    idx = pickle.loads(pickle.dumps(list(sampler)[0]))  # as sent to workers
    assert isinstance(idx, SeededIndex) and idx.seed_key == (9, 2, 0, 4)
    seeder = SeedPerSample()

    def draw(sample_idx):
        seeder(dict(sample_idx=sample_idx))
        return random.random(), np.random.rand(), torch.rand(1).item()

    assert draw(idx) == draw(SeededIndex(int(idx), (9, 2, 0, 4)))
    assert draw(idx) != draw(SeededIndex(int(idx), (9, 3, 0, 4)))
    random.seed(0)
    before = random.getstate()
    seeder(dict(sample_idx=3))  # a plain index: nothing is reseeded
    assert random.getstate() == before
