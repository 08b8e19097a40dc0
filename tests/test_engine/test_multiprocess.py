"""Two CPU processes (gloo) through tools/train.sh: identical parameters,
one checkpoint, per-rank morphing schedules, and an exact 2-process resume."""
import os
import os.path as osp
import socket
import subprocess
import sys
import textwrap

import torch

from mmdtm.morphing import realised_groups, sample_schedule, step_generator

from ..conftest import REPO, TOY_CFG, make_image_folder

# Registers a hook that saves, per rank, the final state_dict and the groups
# per level that rank's loss used at every iteration.
HELPER = textwrap.dedent('''
    import torch
    from mmengine.dist import get_rank
    from mmengine.hooks import Hook
    from mmengine.model import is_model_wrapper
    from mmpretrain.registry import HOOKS


    @HOOKS.register_module()
    class RankDumpHook(Hook):
        def __init__(self):
            self.groups = {}

        def after_train_iter(self, runner, batch_idx, data_batch=None,
                             outputs=None):
            self.groups[runner.iter] = (int(outputs['groups_l1']),
                                        int(outputs['groups_l2']))

        def after_run(self, runner):
            model = runner.model
            model = model.module if is_model_wrapper(model) else model
            torch.save(dict(state_dict=model.state_dict(),
                            groups=self.groups),
                       f'{runner.work_dir}/rank{get_rank()}.pth')
''')


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def train_2proc(cfg, data, work_dir, env, *flags):
    options = [f'train_dataloader.dataset.data_root={data}',
               'train_dataloader.batch_size=2', 'train_cfg.max_iters=4',
               'param_scheduler.0.end=1', 'param_scheduler.1.begin=1',
               'param_scheduler.1.end=4', 'default_hooks.logger.interval=1',
               'default_hooks.checkpoint.interval=2',
               'randomness.deterministic=True']
    proc = subprocess.run(
        ['bash', osp.join(REPO, 'tools', 'train.sh'), cfg, '2',
         '--work-dir', work_dir, *flags, '--cfg-options', *options],
        env=dict(env, PORT=str(free_port())), capture_output=True,
        text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def load(path):
    return torch.load(path, map_location='cpu')


def test_two_processes_gloo_and_resume(tmp_path):
    data = make_image_folder(str(tmp_path / 'data'), num=8)
    (tmp_path / 'rank_dump_helper.py').write_text(HELPER)
    cfg = tmp_path / 'toy_2proc.py'
    cfg.write_text(f'_base_ = [{TOY_CFG!r}]\n'
                   "custom_imports = dict(imports=['mmdtm', "
                   "'rank_dump_helper'], allow_failed_imports=False)\n"
                   "custom_hooks = [dict(type='NonFiniteLossHook'), "
                   "dict(type='StrictLoadHook'), dict(type='RankDumpHook')]\n")
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHON=sys.executable,
               PYTHONPATH=os.pathsep.join(
                   [str(tmp_path)] +
                   [p for p in sys.path if 'mmcvlite' in p]))

    first = str(tmp_path / 'first')
    train_2proc(str(cfg), data, first, env)
    r0, r1 = load(f'{first}/rank0.pth'), load(f'{first}/rank1.pth')
    ckpt = load(f'{first}/iter_4.pth')
    # DDP kept the ranks in step, and rank 0's checkpoint holds the same
    for key, value in r0['state_dict'].items():
        if key.endswith('schedule_state'):
            continue
        assert torch.equal(value, r1['state_dict'][key]), key
        assert torch.equal(value, ckpt['state_dict'][key]), key
    # one checkpoint per save, written once; RNG states of both ranks in it
    assert sorted(f for f in os.listdir(first) if 'pth' in f) == [
        'iter_2.pth', 'iter_4.pth', 'rank0.pth', 'rank1.pth']
    assert len(ckpt['rng_states']) == 2
    # per-rank schedules: rank r draws step i from (seed, r, i)
    seed = int(ckpt['state_dict']['head.loss_module.schedule_state'][0])
    loss = dict(max_merge=[16, 16], max_iters=[4, 4])
    for rank, dump in enumerate((r0, r1)):
        for step in range(4):
            levels = sample_schedule(loss['max_merge'], loss['max_iters'],
                                     step_generator(seed, rank, step),
                                     num_tokens=16)
            assert dump['groups'][step] == tuple(
                realised_groups(16, lv.rounds) for lv in levels)
    assert r0['groups'] != r1['groups']

    # resume a 2-process run from iteration 2: same end state, both ranks
    second = str(tmp_path / 'second')
    train_2proc(str(cfg), data, second, env, '--resume',
                f'{first}/iter_2.pth')
    for rank in (0, 1):
        a = load(f'{first}/rank{rank}.pth')
        b = load(f'{second}/rank{rank}.pth')
        for key, value in a['state_dict'].items():
            assert torch.equal(value, b['state_dict'][key]), (rank, key)
        assert b['groups'] == {k: v for k, v in a['groups'].items() if k >= 2}
