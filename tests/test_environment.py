"""The installed stack is the one its lock file names, the lock files lie
inside mmdtm's declared ranges, and mmcv's compiled ops run on CPU.

``MMDTM_LOCK`` names the lock the environment was built from
(``requirements/lock.txt`` by default; ``make test-oldest`` sets
``requirements/oldest.txt``).
"""
import importlib.metadata as md
import os
import os.path as osp
from typing import Dict, List

import pytest
import torch
from packaging.requirements import Requirement
from packaging.version import Version

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
LOCKS = ('requirements/lock.txt', 'requirements/oldest.txt')
RANGES = ('requirements/runtime.txt', 'requirements/mmcv.txt',
          'requirements/seg.txt')


def _requirements(rel: str) -> List[Requirement]:
    with open(osp.join(REPO, rel), encoding='utf-8') as f:
        lines = [line.split('#', 1)[0].strip() for line in f]
    return [Requirement(line) for line in lines if line]


def _pins(rel: str) -> Dict[str, str]:
    pins = {}
    for req in _requirements(rel):
        exact = [s.version for s in req.specifier if s.operator == '==']
        if exact:
            pins[req.name] = exact[0]
    return pins


def test_installed_stack_is_the_lock():
    import mmcv
    import mmpretrain.models  # noqa: F401
    import mmseg.models  # noqa: F401  (needs mmcv built with ops)
    import open_clip  # noqa: F401

    import mmdtm
    assert mmdtm.__version__
    lock = os.environ.get('MMDTM_LOCK', 'requirements/lock.txt')
    pins = _pins(lock)
    for name in ('torch', 'torchvision', 'numpy', 'mmcv', 'mmengine',
                 'mmpretrain', 'mmsegmentation', 'open_clip_torch'):
        assert name in pins, f'{lock} pins no {name}'
    wrong = {name: (md.version(name), want) for name, want in pins.items()
             if Version(md.version(name)).public != Version(want).public}
    assert not wrong, f'installed != {lock}: {wrong}'
    assert mmcv.__version__ == pins['mmcv']


@pytest.mark.parametrize('lock', LOCKS)
def test_locks_lie_inside_the_declared_ranges(lock):
    pins = _pins(lock)
    checked = 0
    for rel in RANGES:
        for req in _requirements(rel):
            # ranges only: an exact pin would replace the user's package
            assert all(s.operator not in ('==', '===') for s in req.specifier
                       ), f'{rel}: {req} is an exact pin'
            if req.name in pins:
                assert req.specifier.contains(pins[req.name]), (
                    f'{lock} pins {req.name}=={pins[req.name]}, outside '
                    f'{rel}: {req}')
                checked += 1
    assert checked >= 8  # torch, torchvision, numpy, mmcv (x2), mm*, clip


def test_fence_names_the_declared_ranges():
    """``mmdtm.upstream.SUPPORTED`` (the range an upstream-change error
    names) is the range ``install_requires`` declares, for every package."""
    from mmdtm.upstream import SUPPORTED
    declared = {req.name: req.specifier for rel in RANGES
                for req in _requirements(rel)}
    for dist, (_, low, high) in SUPPORTED.items():
        assert dist in declared, f'{dist} is fenced but not required'
        assert set(str(declared[dist]).split(',')) == {f'>={low}',
                                                       f'<{high}'}, (
                f'upstream.SUPPORTED[{dist!r}] = >={low},<{high}, '
                f'requirements: {declared[dist]}')


def test_mmcv_compiled_ops_run_on_cpu():
    from mmcv.ops import nms, point_sample, roi_align
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.],
                          [50., 50., 60., 60.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    _, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    feats = torch.arange(16.).view(1, 1, 4, 4)
    rois = torch.tensor([[0., 0., 0., 4., 4.]])
    pooled = roi_align(feats, rois, (1, 1), 1.0, 2, 'avg', True)
    assert pooled.shape == (1, 1, 1, 1)
    sampled = point_sample(feats, torch.tensor([[[0.5, 0.5]]]))
    assert torch.allclose(sampled.flatten(), feats.mean().view(1))
