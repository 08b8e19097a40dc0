"""Two CPU processes (gloo) through tools/train.sh: identical parameters,
one checkpoint, per-rank morphing schedules, an exact 2-process resume, an
elastic restart after a killed worker (rank 1, or rank 0 between and
during saves), pre-emption, no hang when a peer stops, and two launchers
as two nodes (a restart together, a lost node)."""
import os
import os.path as osp
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from mmdtm.morphing import realised_groups, sample_schedule, step_generator

from ..conftest import REPO, TOY_CFG, make_image_folder
from .test_exact_resume import logged_losses

# Registers a hook that saves, per rank, the final state_dict and the groups
# per level that rank's loss used at every iteration.
# FaultHook: MMDTM_TEST_FAULT='RANK:ITER:SIGNAL[:TARGET][@ATTEMPT],...'
# makes rank RANK send SIGNAL to itself (or TARGET) before iteration ITER,
# in torchrun's attempt ATTEMPT (default 0, the first); RANK '*': any rank
# (of the launcher given this variable). TARGET 'save' instead kills the
# rank half way through writing the checkpoint of ITER; 'node' SIGKILLs the
# launcher shell, torchrun and the worker (a lost node).
# MMDTM_TEST_LATE_RANK=R: rank R of torchrun's first restart joins the group
# 2 s late (it imports this module with the config, before joining), so
# that the others would read what the failed attempt left in the store.
HELPER = textwrap.dedent('''
    import os
    import signal
    import time

    import torch
    from mmengine.dist import get_rank
    from mmengine.fileio.backends import local_backend
    from mmengine.hooks import Hook
    from mmengine.model import is_model_wrapper
    from mmpretrain.registry import HOOKS

    if (os.environ.get('TORCHELASTIC_RESTART_COUNT') == '1' and
            os.environ.get('RANK') == os.environ.get('MMDTM_TEST_LATE_RANK')):
        time.sleep(2)


    def my_faults():
        """(iteration, signal, target) of this rank in this attempt."""
        attempt = os.environ.get('TORCHELASTIC_RESTART_COUNT', '0') or '0'
        rank = os.environ.get('RANK', '0')
        for spec in filter(None, os.environ.get('MMDTM_TEST_FAULT',
                                                '').split(',')):
            spec, _, when = spec.partition('@')
            fault_rank, at, sig, *target = spec.split(':')
            if fault_rank in (rank, '*') and (when or '0') == attempt:
                yield int(at), sig, (target[0] if target else 'self')


    def _kill_during_save(at):
        """Write half of iter_AT.pth.tmp, then SIGKILL this process."""
        original = local_backend.LocalBackend.put

        def put(self, obj, filepath):
            if f'iter_{at}.pth' in str(filepath):
                with open(filepath, 'wb') as f:
                    f.write(obj[:len(obj) // 2])
                    f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self, obj, filepath)

        local_backend.LocalBackend.put = put


    for _at, _sig, _target in my_faults():
        if _target == 'save':
            _kill_during_save(_at)


    def _parent_of(pid):
        with open(f'/proc/{pid}/stat') as f:
            return int(f.read().rsplit(')', 1)[1].split()[1])


    @HOOKS.register_module()
    class FaultHook(Hook):
        """Sends the signals of MMDTM_TEST_FAULT (see above) to this
        process, or to its 'parent' (a Slurm batch shell) or to the
        'launcher' (the shell above torchrun); a signal sent elsewhere is
        waited for until it has come back as a pre-emption flag."""

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            for at, sig, target in my_faults():
                if runner.iter != at or target == 'save':
                    continue
                if target == 'node':  # the launcher shell, torchrun, this
                    launcher = _parent_of(os.getppid())
                    os.kill(os.getppid(), signal.SIGKILL)
                    os.kill(launcher, signal.SIGKILL)
                    os.kill(os.getpid(), signal.SIGKILL)
                pid = {'parent': os.getppid(),
                       'launcher': _parent_of(os.getppid())}.get(
                           target, os.getpid())
                os.kill(pid, getattr(signal, sig))
                if pid == os.getpid():
                    continue
                flag = next(h for h in runner.hooks
                            if type(h).__name__ == 'PreemptionHook')
                deadline = time.monotonic() + 120  # a hang guard only
                while (not flag.signal_received
                       and time.monotonic() < deadline):
                    time.sleep(0.05)


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


OPTIONS = ['train_dataloader.batch_size=2', 'train_cfg.max_iters=4',
           'param_scheduler.0.end=1', 'param_scheduler.1.begin=1',
           'param_scheduler.1.end=4', 'default_hooks.logger.interval=1',
           'default_hooks.checkpoint.interval=2',
           'randomness.deterministic=True']


def train_2proc(cfg, data, work_dir, env, *flags):
    """``tools/train.sh cfg 2``: 4 iterations, checkpoints at 2 and 4."""
    proc = subprocess.run(
        ['bash', osp.join(REPO, 'tools', 'train.sh'), cfg, '2',
         '--work-dir', work_dir, *flags, '--cfg-options',
         f'train_dataloader.dataset.data_root={data}', *OPTIONS],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope='module')
def two_procs(tmp_path_factory):
    """The config, data and environment of the 2-process tests, and the
    work dir of one uninterrupted 2-process run."""
    tmp_path = tmp_path_factory.mktemp('two_procs')
    data = make_image_folder(str(tmp_path / 'data'), num=8)
    (tmp_path / 'rank_dump_helper.py').write_text(HELPER)
    cfg = tmp_path / 'toy_2proc.py'
    cfg.write_text(f'_base_ = [{TOY_CFG!r}]\n'
                   "custom_imports = dict(imports=['mmdtm', "
                   "'rank_dump_helper'], allow_failed_imports=False)\n"
                   "custom_hooks = [dict(type='NonFiniteLossHook'), "
                   "dict(type='StrictLoadHook'), dict(type='RankDumpHook'), "
                   "dict(type='FaultHook')]\n")
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHON=sys.executable,
               PYTHONPATH=os.pathsep.join(
                   [str(tmp_path), REPO] +
                   [p for p in sys.path if 'mmcvlite' in p]))
    for key in ('MAX_RESTARTS', 'MMDTM_TEST_FAULT', 'MMDTM_TEST_LATE_RANK',
                'TORCHELASTIC_RESTART_COUNT', 'NNODES', 'PORT'):
        env.pop(key, None)
    first = str(tmp_path / 'first')
    train_2proc(str(cfg), data, first, env)
    return str(cfg), data, env, first


def load(path):
    return torch.load(path, map_location='cpu')


def test_two_processes_gloo_and_resume(
        two_procs, tmp_path, checkpoint_loading):
    cfg, data, env, first = two_procs
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
                realised_groups(16, lv.per_round) for lv in levels)
    assert r0['groups'] != r1['groups']

    # resume a 2-process run from iteration 2: same end state, both ranks
    second = str(tmp_path / 'second')
    train_2proc(cfg, data, second, env, '--resume',
                f'{first}/iter_2.pth')
    for rank in (0, 1):
        a = load(f'{first}/rank{rank}.pth')
        b = load(f'{second}/rank{rank}.pth')
        for key, value in a['state_dict'].items():
            assert torch.equal(value, b['state_dict'][key]), (rank, key)
        assert b['groups'] == {k: v for k, v in a['groups'].items() if k >= 2}


@pytest.mark.slow
def test_elastic_restart_after_a_killed_worker(two_procs, tmp_path):
    """Rank 1 is SIGKILLed after the checkpoint of iteration 2: torchrun
    (MAX_RESTARTS unset: the default) restarts both workers, which resume
    from iter_2 by themselves and end bit-identical to the uninterrupted
    run: weights, schedules and every logged loss."""
    cfg, data, env, first = two_procs
    work = str(tmp_path / 'elastic')
    out = train_2proc(cfg, data, work,
                      dict(env, MMDTM_TEST_FAULT='1:2:SIGKILL',
                           MMDTM_TEST_LATE_RANK='1'))
    assert 'torchrun restart 1: resuming from the newest complete ' \
        f'checkpoint in {work}' in out
    assert 'torchrun restart 2' not in out  # the first restart worked
    for rank in (0, 1):
        a = load(f'{first}/rank{rank}.pth')
        b = load(f'{work}/rank{rank}.pth')  # written by the restarted run
        for key, value in a['state_dict'].items():
            assert torch.equal(value, b['state_dict'][key]), (rank, key)
        assert b['groups'] == {k: v for k, v in a['groups'].items() if k >= 2}
    losses = logged_losses(work)  # both attempts' logs
    assert sorted(losses) == [1, 2, 3, 4]
    assert losses == logged_losses(first)


@pytest.mark.slow
def test_rank0_killed_between_saves_then_during_a_save(
        two_procs, tmp_path, checkpoint_loading):
    """Rank 0 (which alone writes checkpoints) dies twice in one torchrun
    launch: SIGKILLed before iteration 4, after the checkpoint of iteration
    2 (between saves); then, in the first restart, SIGKILLed half way
    through writing iter_4.pth. Each time torchrun restarts both workers,
    which resume from iter_2.pth (the partial iter_4.pth.tmp is never
    taken); the run ends bit-identical to the uninterrupted one."""
    cfg, data, env, first = two_procs
    work = str(tmp_path / 'rank0')
    out = train_2proc(cfg, data, work,
                      dict(env, MMDTM_TEST_FAULT='0:3:SIGKILL,0:4:SIGKILL:save@1',
                           MMDTM_TEST_LATE_RANK='0'))
    resumed = f'resuming from the newest complete checkpoint in {work}'
    assert f'torchrun restart 1: {resumed}' in out
    assert f'torchrun restart 2: {resumed}' in out
    assert 'torchrun restart 3' not in out
    assert out.count('removing ') == 1 and 'iter_4.pth.tmp, left by an ' \
        'interrupted checkpoint save' in out
    assert sorted(f for f in os.listdir(work) if 'pth' in f) == [
        'iter_2.pth', 'iter_4.pth', 'rank0.pth', 'rank1.pth']
    for rank in (0, 1):
        a = load(f'{first}/rank{rank}.pth')
        b = load(f'{work}/rank{rank}.pth')  # written by the last attempt
        assert_same(a['state_dict'], b['state_dict'], f'rank{rank}')
        assert b['groups'] == {k: v for k, v in a['groups'].items() if k >= 2}
    losses = logged_losses(work)  # all attempts' logs, the last one wins
    assert sorted(losses) == [1, 2, 3, 4]
    assert losses == logged_losses(first)
    a, b = load(f'{first}/iter_4.pth'), load(f'{work}/iter_4.pth')
    for key in ('state_dict', 'optimizer', 'param_schedulers', 'rng_states'):
        assert_same(a[key], b[key], key)


@pytest.mark.slow
def test_a_stopped_peer_fails_the_run_naming_it(two_procs, tmp_path):
    """Two processes started without torchrun (as under srun); rank 1
    stops answering (SIGSTOP: a hung process or a lost node, no socket is
    closed). Rank 0 exits non-zero after the collective timeout (shortened
    to 8 s here) naming rank 1 and how to resume, instead of hanging.
    The test hosts the rendezvous store, as torchrun's agent would (on a
    port it binds itself: no port is picked in advance)."""
    cfg, data, env, _ = two_procs
    work = str(tmp_path / 'work')
    store = torch.distributed.TCPStore('127.0.0.1', 0, is_master=True,
                                       wait_for_workers=False)
    procs, logs = [], []
    for rank in (0, 1):
        logs.append(tmp_path / f'rank{rank}.out')
        procs.append(subprocess.Popen(
            [sys.executable, osp.join(REPO, 'tools', 'train.py'), cfg,
             '--launcher', 'pytorch', '--work-dir', work, '--cfg-options',
             f'train_dataloader.dataset.data_root={data}', *OPTIONS,
             'env_cfg.dist_cfg.timeout=8'],
            env=dict(env, RANK=str(rank), LOCAL_RANK=str(rank),
                     WORLD_SIZE='2', MASTER_ADDR='127.0.0.1',
                     MASTER_PORT=str(store.port),
                     TORCHELASTIC_USE_AGENT_STORE='True',
                     TORCHELASTIC_RESTART_COUNT='0',
                     MMDTM_TEST_FAULT='1:2:SIGSTOP'),
            stdout=open(logs[-1], 'w'), stderr=subprocess.STDOUT))
    try:
        returncode = procs[0].wait(timeout=600)  # hang guard
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()  # SIGKILL also ends a stopped process
                proc.wait()
    out = logs[0].read_text()
    assert returncode not in (0, None), out[-3000:]
    assert 'Timed out' in out  # gloo's timeout, not a closed socket
    assert 'LostRanksError: rank 0: rank(s) [1] stopped answering' in out
    assert f'--resume auto (work dir {work}; the last complete checkpoint ' \
        f'is {osp.join(work, "iter_2.pth")})' in out


def assert_same(a, b, where=''):
    """``a`` and ``b`` equal bit for bit (nested dicts, lists, tensors)."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f'{where}.{key}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f'{where}[{i}]')
    else:
        assert a == b, where


@pytest.mark.slow
def test_preemption_signal_stops_both_ranks_then_resume_is_exact(
        two_procs, tmp_path, checkpoint_loading):
    """tools/train.sh (2 gloo workers) gets SIGUSR1 before the first
    iteration ends, in the middle of the first epoch (2 iterations each).
    It passes it to torchrun as SIGTERM; rank 1 holds until the signal has
    reached it, rank 0 may not have it yet: the all-reduce of the flag
    stops both after iteration 1, iter_1.pth is written and the launcher
    exits with 75. `--resume auto` then ends bit-identical to the
    uninterrupted run: weights, schedules, every logged loss, optimizer
    and scheduler state."""
    cfg, data, env, first = two_procs
    work = str(tmp_path / 'preempted')
    proc = subprocess.run(
        ['bash', osp.join(REPO, 'tools', 'train.sh'), cfg, '2',
         '--work-dir', work, '--cfg-options',
         f'train_dataloader.dataset.data_root={data}', *OPTIONS],
        env=dict(env, MMDTM_TEST_FAULT='1:0:SIGUSR1:launcher'),
        capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 75, out[-3000:]
    assert 'pre-empted (SIGTERM) after iteration 1: checkpoint ' \
        f'{osp.join(work, "iter_1.pth")} written. Exiting with code 75' in out
    assert 'dist_launch.sh: pre-empted (SIGUSR1' in out
    assert sorted(f for f in os.listdir(work) if 'pth' in f) == [
        'iter_1.pth']  # written once, by rank 0, through the atomic path
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert f.read().strip() == osp.join(work, 'iter_1.pth')
    assert load(osp.join(work, 'iter_1.pth'))['meta']['iter'] == 1

    train_2proc(cfg, data, work, env, '--resume', 'auto')
    for rank in (0, 1):
        a = load(f'{first}/rank{rank}.pth')
        b = load(f'{work}/rank{rank}.pth')
        assert_same(a['state_dict'], b['state_dict'], f'rank{rank}')
        assert b['groups'] == {k: v for k, v in a['groups'].items() if k >= 1}
    losses = logged_losses(work)  # both runs' logs
    assert sorted(losses) == [1, 2, 3, 4]
    assert losses == logged_losses(first)
    a, b = load(f'{first}/iter_4.pth'), load(f'{work}/iter_4.pth')
    for key in ('state_dict', 'optimizer', 'param_schedulers', 'rng_states'):
        assert_same(a[key], b[key], key)


def start_two_nodes(cfg, data, work, env, node_envs, tmp_path, *options):
    """Two torchrun launchers on this machine as two nodes (`NNODES=2
    NODE_RANK=0|1 MASTER_ADDR=127.0.0.1 PORT=... tools/train.sh CFG 1`).

    Node 0 hosts the c10d rendezvous on PORT. A port must be known to both
    launchers before they start, so it is picked here; if another process
    takes it first, node 0 fails at once with "address already in use"
    and both start again on a new port (at most 5 tries).
    """
    for _ in range(5):
        with socket.socket() as sock:
            sock.bind(('127.0.0.1', 0))
            port = str(sock.getsockname()[1])
        procs, logs = [], []
        for node in (0, 1):
            logs.append(tmp_path / f'node{node}.out')
            procs.append(subprocess.Popen(
                ['bash', osp.join(REPO, 'tools', 'train.sh'), cfg, '1',
                 '--work-dir', work, '--cfg-options',
                 f'train_dataloader.dataset.data_root={data}', *OPTIONS,
                 *options],
                env=dict(env, NNODES='2', NODE_RANK=str(node),
                         MASTER_ADDR='127.0.0.1', PORT=port, RDZV_ID='two',
                         **node_envs[node]),
                stdout=open(logs[-1], 'w'), stderr=subprocess.STDOUT,
                start_new_session=True))
        try:
            procs[0].wait(timeout=5)
        except subprocess.TimeoutExpired:
            return procs, logs
        if 'address already in use' not in logs[0].read_text().lower():
            return procs, logs
        os.killpg(procs[1].pid, signal.SIGKILL)
        procs[1].wait()
    raise AssertionError('no free port for the rendezvous in 5 tries')


def finish(procs, logs):
    """Wait for the launchers (a hang guard only); their exit codes and
    outputs."""
    try:
        for proc in procs:
            proc.wait(timeout=600)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return [p.returncode for p in procs], [log.read_text() for log in logs]


@pytest.mark.slow
def test_two_nodes_restart_together_and_match_one_node(two_procs, tmp_path):
    """Two launchers as two nodes (c10d rendezvous, one worker each). The
    worker of node 1 is SIGKILLed before iteration 3 (after iter_2.pth):
    both nodes restart and resume; the end state is bit-identical to the
    uninterrupted one-node run, so the parameters on both ranks are the
    same."""
    cfg, data, env, first = two_procs
    work = str(tmp_path / 'two_nodes')
    procs, logs = start_two_nodes(
        cfg, data, work, env,
        [{}, {'MMDTM_TEST_FAULT': '*:2:SIGKILL'}], tmp_path)
    codes, outs = finish(procs, logs)
    assert codes == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    assert 'torchrun restart 1: resuming' in ''.join(outs)
    assert 'torchrun restart 2' not in ''.join(outs)
    r0, r1 = load(f'{work}/rank0.pth'), load(f'{work}/rank1.pth')
    for key, value in r0['state_dict'].items():
        if not key.endswith('schedule_state'):
            assert torch.equal(value, r1['state_dict'][key]), key
    for rank in (0, 1):
        a = load(f'{first}/rank{rank}.pth')
        b = load(f'{work}/rank{rank}.pth')
        assert_same(a['state_dict'], b['state_dict'], f'rank{rank}')
        assert b['groups'] == {k: v for k, v in a['groups'].items() if k >= 2}
    assert logged_losses(work) == logged_losses(first)


@pytest.mark.slow
def test_a_lost_node_stops_the_survivor_naming_it(two_procs, tmp_path):
    """Node 1's launcher, torchrun and worker are SIGKILLed before
    iteration 3. The worker on node 0 stops after the configured
    timeouts (8 s for the collective probe, RDZV_TIMEOUT=10 s for the
    nodes to meet again); its last line names node 1 and the resume
    command."""
    cfg, data, env, _ = two_procs
    work = str(tmp_path / 'lost_node')
    procs, logs = start_two_nodes(
        cfg, data, work, dict(env, RDZV_TIMEOUT='10'),
        [{}, {'MMDTM_TEST_FAULT': '*:2:SIGKILL:node'}], tmp_path,
        'env_cfg.dist_cfg.timeout=8')
    codes, outs = finish(procs, logs)
    assert codes[0] not in (0, None), outs[0][-3000:]
    assert codes[1] == -signal.SIGKILL
    out = outs[0]
    last = out.strip().splitlines()[-1]  # after torchrun's own traceback
    assert last.startswith('dist_launch.sh: the run failed: rank '), last
    assert ' on node 1 (' in last and '--resume auto' in last, last
    assert 'RendezvousTimeoutError' in out  # RDZV_TIMEOUT ended the wait
    assert 'stopped answering (rank ' in out and ' on node 1 (' in out, \
        out[-3000:]
    assert 'no answer within 8 s' in out
    assert f'--resume auto (work dir {work}; the last complete checkpoint ' \
        f'is {osp.join(work, "iter_2.pth")})' in out
