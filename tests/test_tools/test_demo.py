"""`make demo` = tools/demo.py, here on a 4-iteration schedule."""
import json
import os
import os.path as osp

import numpy as np
import torch
from PIL import Image

from ..conftest import REPO
from ._load import load_tool

demo = load_tool('demo')


def test_demo_images_are_shipped_with_their_licences():
    folder = osp.join(REPO, 'demo', 'images')
    readme = open(osp.join(folder, 'README.md')).read()
    names = sorted(f for f in os.listdir(folder)
                   if f.endswith('.jpg'))
    assert len(names) >= 8
    total = 0
    for name in names:
        assert f'| {name} |' in readme, f'{name}: no licence row'
        total += osp.getsize(osp.join(folder, name))
        assert min(Image.open(osp.join(folder, name)).size) >= 128
    assert total < 3 * 2**20


def test_demo_short_schedule(tmp_path, capsys, checkpoint_loading):
    work = tmp_path / 'demo'
    out = demo.main(['--work-dir', str(work), '--iters', '4'])
    printed = capsys.readouterr().out
    assert 'RANDOMLY INITIALISED' in printed
    assert out['checkpoint'] == str(work / 'iter_4.pth')
    ckpt = torch.load(out['checkpoint'], map_location='cpu')
    assert ckpt['meta']['iter'] == 4
    assert not any(k.startswith('target_generator') for k in
                   ckpt['state_dict'])
    # progress with an ETA was logged every iteration of the short schedule
    log = open(next(iter(sorted(work.glob('*/*.log'))))).read()
    assert 'Iter(train) [4/4]' in log and 'eta:' in log
    scalars = [json.loads(line) for line in open(next(iter(
        work.glob('*/vis_data/scalars.json'))))]
    assert [s['step'] for s in scalars if 'loss' in s] == [1, 2, 3, 4]

    curve = np.asarray(Image.open(out['loss_curve']).convert('RGB'))
    assert curve.shape == (360, 600, 3) and len(np.unique(
        curve.reshape(-1, 3), axis=0)) > 10
    morph = Image.open(out['morphing'])
    # 2 photographs x 4 schedules of an 8x8 grid, 28-pixel cells
    assert morph.size == (6 + 4 * (224 + 6), 2 * (30 + 2 * (224 + 6)) + 6)
