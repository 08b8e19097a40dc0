"""The wheel carries what OpenMMLab tools expect, and works on its own.

The wheel is built once per module from a copy of the sources (nothing is
written into the repository), installed with ``pip install --no-deps
--target`` into a temporary folder, and used from another temporary folder
with only that folder on ``PYTHONPATH``: the way a host project sees it.
"""
import os
import os.path as osp
import shutil
import subprocess
import sys
import textwrap
import zipfile

import pytest
import torch

from ..conftest import REPO, make_image_folder

# what setup.py needs to build the wheel
SOURCES = ('setup.py', 'README.md', 'LICENSE', 'model-index.yml',
           'requirements', 'mmdtm', 'configs', 'tools')
TOY = 'dtm/dtm_vit-tiny-p16_1xb8-40iter_toy.py'
ADE = 'ade20k/dtm-vit-base_upernet_8xb2-amp-160k_ade20k-512x512.py'


def _run(cmd, cwd, env=None, timeout=600) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f'{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n'
        f'{proc.stderr[-5000:]}')
    return proc.stdout + proc.stderr


@pytest.fixture(scope='module')
def wheel_install(tmp_path_factory):
    """``(wheel path, --target folder)`` for a wheel of this checkout."""
    root = tmp_path_factory.mktemp('wheel')
    src = root / 'src'
    skip = shutil.ignore_patterns('__pycache__', '*.pyc', '.mim',
                                  '*.egg-info')
    for item in SOURCES:
        path = osp.join(REPO, item)
        if osp.isdir(path):
            shutil.copytree(path, src / item, ignore=skip)
        else:
            os.makedirs(src, exist_ok=True)
            shutil.copyfile(path, src / item)
    pip = [sys.executable, '-m', 'pip', '--disable-pip-version-check']
    _run(pip + ['wheel', str(src), '--no-deps', '--no-build-isolation',
                '-w', str(root / 'dist')], cwd=str(root))
    (wheel, ) = (root / 'dist').glob('mmdtm-*.whl')
    target = root / 'site'
    _run(pip + ['install', '--no-deps', '--target', str(target),
                str(wheel)], cwd=str(root))
    return wheel, target


def _host_env(target) -> dict:
    """The environment of a host process: the installed wheel only."""
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env['PYTHONPATH'] = str(target)
    return env


def test_wheel_holds_configs_tools_and_model_index(wheel_install):
    wheel, _ = wheel_install
    names = set(zipfile.ZipFile(wheel).namelist())
    mim = 'mmdtm/.mim/'
    for rel in ('model-index.yml', 'configs/dtm/metafile.yml',
                f'configs/{TOY}', f'configs/{ADE}', 'configs/dtm_vitb.py',
                'tools/train.py', 'tools/test.py'):
        assert mim + rel in names, f'{mim + rel} not in {wheel.name}'
    # every config of the checkout, and no byte code
    for dirpath, _, files in os.walk(osp.join(REPO, 'configs')):
        for name in files:
            rel = osp.relpath(osp.join(dirpath, name), REPO)
            assert mim + rel.replace(os.sep, '/') in names, rel
    assert not [n for n in names if n.endswith('.pyc')]
    # ranges, never exact pins; mmsegmentation only in the `seg` extra
    meta = next(n for n in names if n.endswith('.dist-info/METADATA'))
    requires = [line.split(':', 1)[1].strip() for line in zipfile.ZipFile(
        wheel).read(meta).decode().splitlines()
        if line.startswith('Requires-Dist:')]
    pins = [r for r in requires if '==' in r.split(';')[0]]
    assert requires and not pins, pins
    seg = [r for r in requires if r.startswith('mmsegmentation')]
    assert seg and all('extra == "seg"' in r for r in seg), seg


def test_host_config_inherits_mmdtm_and_trains(wheel_install, tmp_path):
    """A foreign config with ``_base_ = ['mmdtm::dtm/...']`` loads, builds
    and trains one iteration through the wheel's own tools/train.py."""
    _, target = wheel_install
    data = make_image_folder(str(tmp_path / 'images'), num=4)
    host = tmp_path / 'host'
    host.mkdir()
    (host / 'my_dtm.py').write_text(textwrap.dedent(f'''\
        _base_ = ['mmdtm::{TOY}']
        custom_imports = dict(imports=['mmdtm'], allow_failed_imports=False)
        train_dataloader = dict(batch_size=2, num_workers=0,
                                dataset=dict(data_root={data!r}))
        train_cfg = dict(max_iters=1)
        default_hooks = dict(checkpoint=dict(interval=1),
                             logger=dict(interval=1))
        '''))
    out = _run([sys.executable, str(target / 'mmdtm' / '.mim' / 'tools' /
                                    'train.py'), 'my_dtm.py',
                '--work-dir', str(tmp_path / 'work')], cwd=str(host),
               env=_host_env(target))
    ckpt = torch.load(tmp_path / 'work' / 'iter_1.pth', map_location='cpu',
                      weights_only=False)  # written by this test
    assert ckpt['meta']['iter'] == 1, out
    assert any(k.startswith('backbone.') for k in ckpt['state_dict'])
    # the mmdtm that ran is the wheel's, not the checkout's
    where = _run([sys.executable, '-c', 'import mmdtm; print(mmdtm.__file__)'],
                 cwd=str(host), env=_host_env(target))
    assert where.strip().startswith(str(target)), where


def test_mmseg_config_inherits_mmdtm_ade20k(wheel_install, tmp_path):
    """An MMSegmentation config inheriting ``mmdtm::ade20k/...`` builds its
    segmentor (shrunk to a 2-block 64-d ViT) and runs a forward pass."""
    _, target = wheel_install
    host = tmp_path / 'host'
    host.mkdir()
    (host / 'my_seg.py').write_text(textwrap.dedent(f'''\
        _base_ = ['mmdtm::{ADE}']
        crop_size = (64, 64)
        model = dict(
            data_preprocessor=dict(size=crop_size),
            backbone=dict(
                arch=dict(_delete_=True, embed_dims=64, num_layers=4,
                          num_heads=2, feedforward_channels=128),
                img_size=64, out_indices=[0, 1, 2, 3],
                init_cfg=None),
            neck=dict(embed_dim=64),
            decode_head=dict(in_channels=[64] * 4, channels=32,
                             pool_scales=(1, 2)),
            auxiliary_head=dict(in_channels=64, channels=16),
            test_cfg=dict(mode='whole'))
        '''))
    script = textwrap.dedent('''\
        import mmdtm  # registers mmdtm:: paths (what mmdtm's tools do)
        import torch
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        from mmseg.registry import MODELS
        cfg = Config.fromfile('my_seg.py')
        init_default_scope(cfg.get('default_scope', 'mmseg'))
        model = MODELS.build(cfg.model)
        model.init_weights()
        model.eval()
        with torch.no_grad():
            out = model(torch.rand(1, 3, 64, 64), mode='tensor')
        print(type(model).__name__, type(model.backbone).__name__,
              tuple(out.shape))
        ''')
    out = _run([sys.executable, '-c', script], cwd=str(host),
               env=_host_env(target))
    assert 'EncoderDecoder DTMViT (1, 150, 16, 16)' in out, out


def test_mmdtm_imports_without_mmsegmentation(tmp_path):
    """MMSegmentation is the ``seg`` extra: nothing in the package imports
    it (the ADE20K configs name its components by string)."""
    script = ("import sys; sys.modules['mmseg'] = None  # not installed\n"
              'import mmdtm, mmdtm.analysis, mmdtm.checkpoint.cli\n'
              'import mmdtm.visualization\n'
              "print('ok', [m for m in sys.modules if m.startswith('mmseg')])")
    env = dict(os.environ, PYTHONPATH=REPO)
    out = _run([sys.executable, '-c', script], cwd=str(tmp_path), env=env)
    assert "ok ['mmseg']" in out, out
