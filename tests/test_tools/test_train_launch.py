"""tools/train.sh (torchrun, CPU gloo fallback) and tools/train.py's flags."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from ..conftest import REPO, TOY_CFG, make_image_folder
from ._load import TOOLS, load_tool

train = load_tool('train')


def test_train_sh_two_processes_on_cpu(tmp_path, checkpoint_loading):
    """`tools/train.sh <toy config> 2` trains 3 iterations with 2 processes
    and writes one checkpoint."""
    data = make_image_folder(str(tmp_path / 'data'), num=8)
    work = tmp_path / 'work'
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1')
    env.pop('PORT', None)  # one node: torchrun binds a free port itself
    proc = subprocess.run(
        ['bash', osp.join(TOOLS, 'train.sh'), TOY_CFG, '2',
         '--work-dir', str(work), '--cfg-options',
         f'train_dataloader.dataset.data_root={data}',
         'train_dataloader.batch_size=2', 'train_cfg.max_iters=3',
         'default_hooks.checkpoint.interval=3',
         'default_hooks.logger.interval=1',
         'param_scheduler.0.end=1', 'param_scheduler.1.begin=1',
         'param_scheduler.1.end=3'],
        cwd=str(tmp_path), env=env, capture_output=True, text=True,
        timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    # both workers ended cleanly: no worker aborted at exit and made
    # torchrun restart a finished run (tools/train.py closes the group)
    assert 'torchrun restart' not in out and 'exitcode' not in out, \
        out[-3000:]
    assert sorted(p for p in os.listdir(work) if p.endswith('.pth')) == [
        'iter_3.pth']
    if not torch.cuda.is_available():
        assert "-> 'gloo' (CPU), world size 2" in out
    log = open(next(
        osp.join(root, f) for root, _, files in os.walk(work)
        for f in files if f.endswith('.log'))).read()
    assert 'Distributed training: True' in log
    assert 'Iter(train) [3/3]' in log or '[3/' in log
    ckpt = torch.load(work / 'iter_3.pth', map_location='cpu')
    assert ckpt['meta']['iter'] == 3
    # every rank drew its schedules from its own stream (seed, rank, call)
    assert 'head.loss_module.schedule_state' in ckpt['state_dict']


def test_train_sh_usage(tmp_path):
    proc = subprocess.run(['bash', osp.join(TOOLS, 'train.sh'), TOY_CFG],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and 'usage' in proc.stderr


def _args(*argv):
    return train.parse_args([TOY_CFG, *argv])


def test_merge_args_flags(tmp_path):
    cfg = train.merge_args(Config.fromfile(TOY_CFG), _args())
    assert cfg.work_dir == osp.join('work_dirs',
                                    'dtm_vit-tiny-p16_1xb8-40iter_toy')
    assert cfg.launcher == 'none' and cfg.resume is False
    assert cfg.train_dataloader.persistent_workers is False  # num_workers=0

    cfg = train.merge_args(Config.fromfile(TOY_CFG), _args(
        '--resume', '--work-dir', str(tmp_path),
        '--cfg-options', 'train_cfg.max_iters=7'))
    assert (cfg.resume, cfg.load_from) == (True, None)
    assert cfg.work_dir == str(tmp_path) and cfg.train_cfg.max_iters == 7

    cfg = train.merge_args(Config.fromfile(TOY_CFG),
                           _args('--resume', 'some/iter_4.pth'))
    assert (cfg.resume, cfg.load_from) == (True, 'some/iter_4.pth')

    with pytest.raises(KeyError, match='auto_scale_lr.base_batch_size'):
        train.merge_args(Config.fromfile(TOY_CFG), _args('--auto-scale-lr'))
    cfg = Config.fromfile(TOY_CFG)
    cfg.auto_scale_lr = dict(base_batch_size=8)
    assert train.merge_args(cfg, _args('--auto-scale-lr')).auto_scale_lr == \
        dict(base_batch_size=8, enable=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour')
def test_amp_without_cuda_is_a_clear_error():
    with pytest.raises(RuntimeError, match='--amp needs a GPU'):
        train.merge_args(Config.fromfile(TOY_CFG), _args('--amp'))


def test_missing_config_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.py'):
        train.main([str(tmp_path / 'nope.py')])


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour')
def test_cpu_fallback_from_slurm_variables(monkeypatch):
    """A Slurm task on a CPU node: gloo, env from SLURM_*, no device_ids."""
    from mmdtm.engine.launch import cpu_distributed_fallback
    for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'):
        monkeypatch.setenv(key, '5')  # stale values: SLURM_* must win
    monkeypatch.setenv('SLURM_PROCID', '0')
    monkeypatch.setenv('SLURM_NTASKS', '1')
    monkeypatch.setenv('SLURM_LOCALID', '0')
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', '0')  # one process: any free port
    cfg = Config.fromfile(TOY_CFG)
    cfg.env_cfg.dist_cfg.backend = 'nccl'
    assert cpu_distributed_fallback(cfg.copy(), 'none') is False
    try:
        assert cpu_distributed_fallback(cfg, 'slurm') is True
        assert torch.distributed.get_backend() == 'gloo'
        assert torch.distributed.get_world_size() == 1
    finally:
        torch.distributed.destroy_process_group()
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg.device_ids is None
    assert (os.environ['RANK'], os.environ['WORLD_SIZE']) == ('0', '1')
    with pytest.raises(ValueError, match='launcher'):
        cpu_distributed_fallback(cfg, 'torchrun')


# Stand-ins for Slurm's commands that run the job on this machine: sbatch
# runs the batch script at once (job 42, its --export applied), srun starts
# one task, scontrol records requeues and names this host.
SBATCH = """#!/usr/bin/env bash
echo "sbatch $*" >> "$SLURM_LOG"
while [ $# -gt 0 ]; do case "$1" in
  --export=*) IFS=, read -ra kv <<< "${1#--export=}"
              for x in "${kv[@]}"; do [ "$x" = ALL ] || export "$x"; done
              shift;;
  -p) shift 2;; -*) shift;; *) break;; esac; done
export SLURM_JOB_ID=42
exec bash "$@"
"""
SRUN = """#!/usr/bin/env bash
echo "srun $*" >> "$SLURM_LOG"
while [ $# -gt 0 ]; do case "$1" in -*) shift;; *) break;; esac; done
export SLURM_PROCID=0 SLURM_NTASKS=1 SLURM_LOCALID=0 SLURM_NODELIST=node1
exec "$@"
"""
SCONTROL = """#!/usr/bin/env bash
case "$1" in
  requeue) echo "scontrol requeue $2" >> "$SLURM_LOG";;
  show) echo 127.0.0.1;;
esac
"""


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour')
def test_slurm_train_sh_requeues_a_preempted_job(tmp_path, checkpoint_loading):
    """tools/slurm_train.sh submits itself (sbatch --requeue, the signal
    120 s ahead); in the job, srun -> train.py --launcher slurm. Slurm's
    SIGUSR1 to the batch shell (sent here by the task before iteration 2)
    reaches the task, which writes iter_2.pth and exits 75; the script
    requeues the job. The requeued job (SLURM_RESTART_COUNT=1) resumes
    with --resume auto and finishes."""
    from ..test_engine.test_multiprocess import HELPER
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for name, text in (('sbatch', SBATCH), ('srun', SRUN),
                       ('scontrol', SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / 'fault_helper.py').write_text(HELPER)
    cfg = tmp_path / 'toy_fault.py'
    cfg.write_text(f'_base_ = [{TOY_CFG!r}]\n'
                   "custom_imports = dict(imports=['mmdtm', 'fault_helper'],"
                   " allow_failed_imports=False)\n"
                   "custom_hooks = [dict(type='FaultHook')]\n")
    data = make_image_folder(str(tmp_path / 'data'), num=4)
    work = tmp_path / 'work'
    log = tmp_path / 'slurm.log'
    env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}',
               PYTHON=sys.executable, GPUS='1', SLURM_LOG=str(log),
               PORT='0',  # one task: its store takes any free port
               PYTHONPATH=os.pathsep.join([str(tmp_path), REPO]),
               OMP_NUM_THREADS='1', MMDTM_TEST_FAULT='0:1:SIGUSR1:parent')
    for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR',
                'SLURM_JOB_ID', 'SLURM_RESTART_COUNT', 'MMDTM_SLURM_BATCH'):
        env.pop(key, None)
    command = ['bash', osp.join(TOOLS, 'slurm_train.sh'), 'cpu', 'dtm_toy',
               str(cfg), '--work-dir', str(work), '--cfg-options',
               f'train_dataloader.dataset.data_root={data}',
               'train_dataloader.batch_size=2', 'train_cfg.max_iters=4',
               'default_hooks.checkpoint.interval=4']
    proc = subprocess.run(command, env=env, capture_output=True, text=True,
                          timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 75, out[-3000:]
    calls = log.read_text()
    assert '-p cpu --job-name=dtm_toy --nodes=1 --gres=gpu:1 --ntasks=1 ' \
        '--ntasks-per-node=1 --cpus-per-task=5 --requeue ' \
        '--signal=B:USR1@120 ' in calls
    assert 'srun --kill-on-bad-exit=1 ' in calls and '--launcher slurm' in calls
    assert calls.strip().endswith('scontrol requeue 42')
    assert "-> 'gloo' (CPU), world size 1" in out
    assert 'pre-empted (SIGUSR1) after iteration 2' in out
    assert sorted(p for p in os.listdir(work) if 'pth' in p) == ['iter_2.pth']

    # Slurm starts the requeued job with SLURM_RESTART_COUNT=1
    log.write_text('')
    proc = subprocess.run(command, env=dict(env, SLURM_RESTART_COUNT='1'),
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert 'resuming with --resume auto' in out
    assert '--resume auto' in log.read_text()
    assert 'scontrol requeue' not in log.read_text()
    assert 'Resuming at iteration 2' in out
    assert torch.load(work / 'iter_4.pth', map_location='cpu')['meta'][
        'iter'] == 4


@pytest.mark.parametrize('value, expected', [(None, '3'), ('0', '0')])
def test_dist_launch_max_restarts_from_the_environment(value, expected):
    """torchrun gets --max-restarts=$MAX_RESTARTS (default 3)."""
    env = dict(os.environ, PYTHON='echo')  # print torchrun's command line
    env.pop('MAX_RESTARTS', None)
    if value is not None:
        env['MAX_RESTARTS'] = value
    proc = subprocess.run(
        ['bash', osp.join(TOOLS, 'dist_launch.sh'), 'train.py', '2', 'cfg'],
        env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f'--max-restarts={expected} ' in proc.stdout
    assert '--nproc_per_node=2' in proc.stdout


def test_dist_launch_lets_torchrun_pick_the_port_on_one_node():
    """One node: --standalone (torchrun binds a free port itself, so two
    launches on one machine cannot race for a port picked before);
    several nodes: torchrun's c10d rendezvous at MASTER_ADDR:PORT, hosted
    by node 0."""
    env = dict(os.environ, PYTHON='echo', PORT='29511')
    for key in ('NNODES', 'NODE_RANK', 'RDZV_ID', 'RDZV_TIMEOUT',
                'SLURM_JOB_ID', 'SLURM_NNODES', 'SLURM_NODEID'):
        env.pop(key, None)
    one = subprocess.run(
        ['bash', osp.join(TOOLS, 'dist_launch.sh'), 'train.py', '2', 'cfg'],
        env=env, capture_output=True, text=True, timeout=60)
    assert one.returncode == 0, one.stderr
    assert '--standalone ' in one.stdout and 'master_port' not in one.stdout
    two = subprocess.run(
        ['bash', osp.join(TOOLS, 'dist_launch.sh'), 'train.py', '2', 'cfg'],
        env=dict(env, NNODES='2', NODE_RANK='1', MASTER_ADDR='10.0.0.1'),
        capture_output=True, text=True, timeout=60)
    assert two.returncode == 0, two.stderr
    assert '--standalone' not in two.stdout
    assert '--nnodes=2 --rdzv-backend=c10d --rdzv-endpoint=10.0.0.1:29511 ' \
        '--rdzv-id=mmdtm --rdzv-conf=is_host=0,join_timeout=600 ' in two.stdout


def test_restarted_worker_resumes_only_with_a_checkpoint(tmp_path,
                                                         monkeypatch):
    """A worker restarted by torchrun resumes from the work dir when it
    holds a checkpoint; otherwise the run starts as it was launched."""
    from mmdtm.engine.launch import prepare_restart
    cfg = train.merge_args(Config.fromfile(TOY_CFG), _args(
        '--work-dir', str(tmp_path), '--resume', 'given/iter_2.pth'))
    monkeypatch.delenv('TORCHELASTIC_RESTART_COUNT', raising=False)
    assert prepare_restart(cfg, 'none') is False  # not under torchrun
    monkeypatch.setenv('TORCHELASTIC_RESTART_COUNT', '0')
    (tmp_path / 'iter_2.pth').write_bytes(b'')
    assert prepare_restart(cfg, 'none') is False  # first attempt
    monkeypatch.setenv('TORCHELASTIC_RESTART_COUNT', '1')
    (tmp_path / 'iter_2.pth').unlink()
    assert prepare_restart(cfg, 'none') is False  # nothing saved yet
    assert (cfg.resume, cfg.load_from) == (True, 'given/iter_2.pth')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_2.pth'))
    assert prepare_restart(cfg, 'none') is True
    assert (cfg.resume, cfg.load_from) == (True, None)


@pytest.mark.slow
def test_a_failed_launch_names_the_cause_in_its_last_lines(tmp_path):
    """`tools/train.sh CONFIG 1` without the data, as a new user tries it
    (with one of torchrun's restarts, so that the error is printed twice
    on the way): the last lines, torchrun's summary, carry the worker's
    exception (its error file, through @record), which names the config
    key to set and the README section."""
    missing = str(tmp_path / 'data' / 'imagenet')
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1',
               MAX_RESTARTS='1')
    for key in ('NNODES', 'PORT'):
        env.pop(key, None)
    proc = subprocess.run(
        ['bash', osp.join(TOOLS, 'train.sh'), TOY_CFG, '1',
         '--work-dir', str(tmp_path / 'work'), '--cfg-options',
         f'train_dataloader.dataset.data_root={missing}'],
        cwd=str(tmp_path), env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode != 0
    last = '\n'.join(proc.stdout.strip().splitlines()[-12:])
    assert 'FileNotFoundError: train_dataloader.dataset.data_root: no such ' \
        f"folder '{missing}'" in last, last
    assert 'README.md, section "Training on ImageNet"' in last, last
    assert 'error_file: <N/A>' not in proc.stdout
    assert proc.stdout.count('Root Cause') == 1  # one summary, at the end
