"""IsolatedRunner: runs started within one second keep their own log dirs
and process-wide instances (MMEngine names both by the second)."""
import glob
import json
import os.path as osp
import time
import types

import mmengine.runner.runner as mmengine_runner
import pytest
from mmengine.config import Config
from mmengine.runner import Runner

from mmdtm.engine import IsolatedRunner, build_runner

from ..conftest import REPO, make_image_folder, toy_config

# 2026-09-20 12:26:40.250 UTC: every Runner of a test starts in this second
FROZEN = 1_790_000_000.25


@pytest.fixture
def one_second(monkeypatch):
    """MMEngine's Runner reads the wall clock once, for its timestamp."""
    clock = types.SimpleNamespace(time=lambda: FROZEN,
                                  strftime=time.strftime,
                                  localtime=time.localtime)
    monkeypatch.setattr(mmengine_runner, 'time', clock)
    return time.strftime('%Y%m%d_%H%M%S', time.localtime(FROZEN))


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp('runner_data')),
                             num=4)


def scalars(log_dir):
    """The iterations logged in ``log_dir/vis_data/scalars.json``."""
    path = osp.join(log_dir, 'vis_data', 'scalars.json')
    with open(path) as f:
        return [json.loads(line)['step'] for line in f
                if 'loss' in json.loads(line)]


def test_mmengine_runners_in_one_second_share_their_instances(
        tmp_path, data, one_second):
    """What IsolatedRunner prevents: plain MMEngine Runners started in the
    same second share the visualizer (so one run's scalars are written
    into the other run's directory) and the message hub."""
    a = Runner.from_cfg(toy_config(str(tmp_path / 'a'), data, 2))
    b = Runner.from_cfg(toy_config(str(tmp_path / 'b'), data, 2))
    assert a.experiment_name == b.experiment_name
    assert a.visualizer is b.visualizer and a.message_hub is b.message_hub
    assert b.visualizer._vis_backends['LocalVisBackend']._save_dir == \
        osp.join(a.log_dir, 'vis_data')


def test_isolated_runners_in_one_second_keep_their_own(tmp_path, data,
                                                       one_second):
    stamp = one_second
    runs = [build_runner(toy_config(str(tmp_path / work), data, 2))
            for work in ('a', 'b', 'a')]
    assert all(type(r) is IsolatedRunner for r in runs)
    # MMEngine's names for the first run; the next ones get _2, _3
    assert [r.timestamp for r in runs] == [stamp, f'{stamp}_2',
                                           f'{stamp}_3']
    assert runs[0].experiment_name == \
        f'dtm_vit-tiny-p16_1xb8-40iter_toy_{stamp}'
    assert runs[1].log_dir == osp.join(str(tmp_path / 'b'), f'{stamp}_2')
    for attr in ('visualizer', 'message_hub', 'logger'):
        assert len({id(getattr(r, attr)) for r in runs}) == 3, attr
    for run in runs:
        run.train()
    for run in runs:  # each run's scalars in its own log dir, once
        assert scalars(run.log_dir) == [1, 2]
        log = glob.glob(osp.join(run.log_dir, '*.log'))
        assert [osp.basename(p) for p in log] == [f'{run.timestamp}.log']
        with open(log[0]) as f:
            assert f'Exp name: {run.experiment_name}\n' in f.read()


def test_an_existing_log_dir_is_not_reused(tmp_path, data, one_second):
    """A run restarted in the same second (another process, same work
    dir) does not append to the earlier run's logs."""
    (tmp_path / one_second).mkdir()
    run = build_runner(toy_config(str(tmp_path), data, 2))
    assert run.log_dir == osp.join(str(tmp_path), f'{one_second}_2')


def test_build_runner_names_an_unknown_runner_type(tmp_path, data):
    cfg = toy_config(str(tmp_path), data, 2, runner_type='NoSuchRunner')
    with pytest.raises(KeyError, match="runner_type='NoSuchRunner'"):
        build_runner(cfg)


@pytest.mark.parametrize('path', sorted(
    osp.relpath(p, REPO)
    for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'),
                       recursive=True) if '_base_' not in p))
def test_every_shipped_config_uses_the_isolated_runner(path):
    cfg = Config.fromfile(osp.join(REPO, path))
    assert cfg.get('runner_type') == 'IsolatedRunner'
