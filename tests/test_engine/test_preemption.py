"""PreemptionHook in one process without a launcher: a signal stops the
run after the current iteration with a checkpoint and exit code 75."""
import os
import os.path as osp
import signal
import textwrap

import pytest
import torch

from mmdtm.engine import PREEMPTED_EXIT_CODE, PreemptionHook

from ..conftest import TOY_CFG, make_image_folder
from ..test_tools._load import load_tool

# sends SIGNAL to this process before iteration AT
SELF_SIGNAL = textwrap.dedent('''
    import os
    import signal

    from mmengine.hooks import Hook
    from mmpretrain.registry import HOOKS


    @HOOKS.register_module(force=True)
    class SignalSelfHook(Hook):
        def __init__(self, at, sig):
            self.at, self.sig = at, sig

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            if runner.iter == self.at:
                os.kill(os.getpid(), getattr(signal, self.sig))
''')


@pytest.mark.parametrize('sig', ['SIGTERM', 'SIGUSR1'])
def test_signal_stops_a_single_process_with_a_checkpoint(
        tmp_path, monkeypatch, sig):
    """tools/train.py without a launcher: the signal arrives before
    iteration 3 (index 2); iteration 3 ends, iter_3.pth is written through
    the atomic path (no interval save is due), and the process exits 75."""
    (tmp_path / 'self_signal.py').write_text(SELF_SIGNAL)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = tmp_path / 'toy_signal.py'
    cfg.write_text(f'_base_ = [{TOY_CFG!r}]\n'
                   "custom_imports = dict(imports=['mmdtm', 'self_signal'], "
                   "allow_failed_imports=False)\n"
                   "custom_hooks = [dict(type='SignalSelfHook', at=2, "
                   f"sig={sig!r})]\n")
    data = make_image_folder(str(tmp_path / 'data'), num=4)
    work = tmp_path / 'work'
    train = load_tool('train')
    previous = signal.getsignal(getattr(signal, sig))
    with pytest.raises(SystemExit) as info:
        train.main([
            str(cfg), '--work-dir', str(work), '--cfg-options',
            f'train_dataloader.dataset.data_root={data}',
            'train_dataloader.batch_size=2', 'train_cfg.max_iters=6',
            'default_hooks.checkpoint.interval=100'])
    assert info.value.code == PREEMPTED_EXIT_CODE == 75
    files = sorted(os.listdir(work))
    assert [f for f in files if 'pth' in f] == ['iter_3.pth']
    with open(work / 'last_checkpoint') as f:
        assert f.read().strip() == str(work / 'iter_3.pth')
    ckpt = torch.load(work / 'iter_3.pth', map_location='cpu')
    assert ckpt['meta']['iter'] == 3 and len(ckpt['rng_states']) == 1
    log = ''.join(open(osp.join(root, f)).read()
                  for root, _, names in os.walk(work) for f in names
                  if f.endswith('.log'))
    assert f'pre-empted ({sig}) after iteration 3: checkpoint ' \
        f'{work / "iter_3.pth"} written. Exiting with code 75; resume with ' \
        f'the same command plus --resume auto' in log
    # the flag handler stays until the process exits; put the old one back
    assert signal.getsignal(getattr(signal, sig)) != previous
    signal.signal(getattr(signal, sig), previous)


def test_preemption_hook_rejects_bad_signals():
    with pytest.raises(ValueError, match="got 'TERM'"):
        PreemptionHook(signals=['TERM'])
    with pytest.raises(ValueError, match='SIGKILL cannot be caught'):
        PreemptionHook(signals=['SIGKILL'])
    with pytest.raises(ValueError, match='non-empty list'):
        PreemptionHook(signals='SIGTERM')
    hook = PreemptionHook(signals=('SIGUSR2',))
    assert hook.signals == [signal.SIGUSR2] and hook.signal_received == 0


def test_a_failed_run_gives_the_signals_back():
    """After a failure (a peer lost: no iteration boundary will come), the
    signals get their old handlers back and a signal already received is
    delivered again, so that torchrun's SIGTERM for a restart ends the
    process at once instead of after torchrun's kill timeout."""
    from types import SimpleNamespace

    from mmdtm.engine.hooks import Preempted, failures_end_preemption
    got = []
    previous = signal.signal(signal.SIGUSR2, lambda n, f: got.append(n))
    try:
        hook = PreemptionHook(signals=['SIGUSR2'])
        runner = SimpleNamespace(hooks=[hook])
        hook.before_run(runner)
        with pytest.raises(Preempted):  # pre-empted: the handler stays
            with failures_end_preemption(runner):
                raise Preempted('stop')
        os.kill(os.getpid(), signal.SIGUSR2)
        assert hook.signal_received == signal.SIGUSR2 and got == []
        with pytest.raises(RuntimeError, match='peer lost'):
            with failures_end_preemption(runner):
                raise RuntimeError('peer lost')
        assert got == [signal.SIGUSR2]  # delivered again, old handler
        assert hook.signal_received == 0
    finally:
        signal.signal(signal.SIGUSR2, previous)
