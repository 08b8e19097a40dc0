"""shorten_schedule: the one way the demo and the tests shorten a run."""
import os.path as osp

import pytest
from mmengine.config import Config

from mmdtm.engine import shorten_schedule
from tests.conftest import REPO, TOY_CFG

DEMO_CFG = osp.join(REPO, 'configs', 'dtm',
                    'dtm_vit-tiny-p16_1xb16-300iter_demo.py')


def _spans(cfg):
    return [(s.begin, s.end) for s in cfg.param_scheduler]


@pytest.mark.parametrize('iters, spans', [
    (300, [(0, 30), (30, 300)]),  # the config's own length: unchanged
    (40, [(0, 4), (4, 40)]),
    (4, [(0, 1), (1, 4)]),
    (1, [(0, 1), (1, 2)]),  # the decay lasts at least one iteration
])
def test_warmup_keeps_its_share(iters, spans):
    cfg = shorten_schedule(Config.fromfile(DEMO_CFG), iters)
    assert cfg.train_cfg.max_iters == iters
    assert _spans(cfg) == spans


def test_toy_config():
    cfg = Config.fromfile(TOY_CFG)
    assert _spans(shorten_schedule(cfg.copy(), 40)) == _spans(cfg)
    assert _spans(shorten_schedule(cfg, 16)) == [(0, 2), (2, 16)]


def test_refuses_what_it_cannot_shorten():
    cfg = Config.fromfile(TOY_CFG)
    with pytest.raises(ValueError, match='iters must be an int >= 1'):
        shorten_schedule(cfg, 0)
    cfg.param_scheduler = cfg.param_scheduler[:1]
    with pytest.raises(ValueError, match='param_scheduler must be a warm-up'):
        shorten_schedule(cfg, 8)
    cfg = Config.fromfile(TOY_CFG)
    del cfg.train_cfg['max_iters']
    with pytest.raises(ValueError, match='train_cfg.max_iters is not set'):
        shorten_schedule(cfg, 8)
