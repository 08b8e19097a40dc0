"""The benchmark scripts must keep running: a tiny bench_morphing end to end,
the dense formulation it times against, and the other scripts' flags.

The end-to-end run is the script's ``main`` in a forked child (one thread,
as DataLoader workers do): the modules are already imported, so it takes
seconds, and the child's process-wide settings (glibc malloc tuning, RNG
seed, thread count) die with it.
"""
import contextlib
import json
import math
import multiprocessing
import os.path as osp
import sys

import pytest
import torch

from mmdtm.morphing import realised_groups
from tests.conftest import REPO, STATIC_OP_COMPILES

BENCH = osp.join(REPO, 'benchmarks')


def _run_main_forked(module, argv, stdout_path, timeout=600):
    """Run ``module.main(argv)`` in a forked child; its exit code."""
    def child():
        torch.set_num_threads(1)
        with open(stdout_path, 'w') as f, contextlib.redirect_stdout(f):
            module.main(argv)

    proc = multiprocessing.get_context('fork').Process(target=child)
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        pytest.fail(f'{module.__name__} ran past {timeout} s')
    return proc.exitcode


def _result_line(stdout):
    lines = [ln for ln in stdout.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith('RESULT '), stdout[-2000:]
    return dict(kv.split('=', 1) for kv in lines[-1].split()[1:])


@pytest.fixture(scope='module')
def bench_morphing():
    sys.path.insert(0, BENCH)
    try:
        import bench_morphing
        yield bench_morphing
    finally:
        sys.path.remove(BENCH)
        for name in ('common', 'bench_morphing', 'bench_train_step',
                     'bench_teacher'):
            sys.modules.pop(name, None)


def test_bench_morphing_tiny_end_to_end(bench_morphing, tmp_path):
    out, log = tmp_path / 'morph.json', tmp_path / 'stdout.txt'
    code = _run_main_forked(bench_morphing, [
        '--batch', '2', '3', '--tokens', '20', '--channels', '8', '--iters',
        '1', '3', '--repeats', '2', '--warmup', '1', '--mem-repeats', '1',
        '--backward', '--profile', '3', '--threads', '1', '--json', str(out),
        '--compile-backend', 'eager',  # graph capture only: seconds
        '--ops-batch', '3'
    ], log)
    stdout = log.read_text()
    assert code == 0, stdout[-3000:]
    result = _result_line(stdout)
    assert result['benchmark'] == 'morphing'
    for b in (2, 3):
        for k in (1, 3):
            assert float(result[f'speedup_B{b}_k{k}']) > 0
            assert f'mem_frac_B{b}_k{k}' in result
            assert float(result[f'rounds_speedup_B{b}_k{k}']) > 0
            assert float(result[f'gram_speedup_B{b}_k{k}']) > 0
    # k >= 7 rounds at the largest batch: none here
    assert result['goal_speedup'] == 'n/a'
    assert result['compiled_recompiles'] == '0'
    eager_ops, compiled_ops = (int(result[f'ops_per_step_{k}'])
                               for k in ('eager', 'compiled'))
    if STATIC_OP_COMPILES:  # else the compiled arm runs eagerly (conftest)
        assert 0 < compiled_ops < eager_ops
    assert '| B | k | r |' in stdout  # the table
    assert 'profile of ours at B=3, k=3' in stdout
    assert 'profile of dense at B=3, k=3' in stdout

    data = json.loads(out.read_text())
    assert data['benchmark'] == 'morphing'
    assert data['summary']['goal_speedup'] == result['goal_speedup']
    assert data['machine']['device'] == 'cpu'
    rows = data['rows']
    assert [(r['batch'], r['iters']) for r in rows] == [(2, 1), (2, 3),
                                                       (3, 1), (3, 3)]
    for r in rows:
        assert r['r'] == math.ceil(20 * 0.5 / r['iters'])
        assert r['groups'] == realised_groups(20, [r['r']] * r['iters'])
        assert r['max_abs_diff'] <= 1e-4
        assert len(r['times_s']['ours']) == 2 == len(r['times_s']['dense'])
        assert len(r['times_s']['compiled']) == 2 == len(r['times_s']['rounds'])
        assert len(r['times_s']['gram']) == 2
        assert r['speedup'] == pytest.approx(r['dense_ms'] / r['ours_ms'])


@pytest.mark.parametrize('rounds', [[5], [2, 2, 2], [4, 1, 3, 2], [30]])
def test_dense_formulation_matches_ours(bench_morphing, rounds):
    student, teacher = bench_morphing.make_tokens(3, 25, 6, 7,
                                                  torch.device('cpu'), 1)
    src = bench_morphing.dense_sources(teacher, rounds)
    # a partition: every token in exactly one group, G = N - merges
    assert torch.equal(src.sum(1), torch.ones(3, 25))
    assert src.shape[1] == realised_groups(25, rounds)
    assert bench_morphing.check_same(student, teacher, rounds) < 1e-5


def test_check_same_catches_a_wrong_arm(bench_morphing, monkeypatch):
    student, teacher = bench_morphing.make_tokens(2, 16, 4, 4,
                                                  torch.device('cpu'), 0)
    wrong = bench_morphing.dense_arm

    def off_by_one_round(s, t, rounds):
        return wrong(s, t, list(rounds)[:-1] + [0])

    monkeypatch.setattr(bench_morphing, 'dense_arm', off_by_one_round)
    with pytest.raises(SystemExit, match='disagree'):
        bench_morphing.check_same(student, teacher, [2, 3])


@pytest.mark.parametrize('script', ['bench_morphing', 'bench_train_step',
                                    'bench_teacher'])
def test_bench_scripts_parse_their_flags(bench_morphing, script, capsys):
    import importlib
    module = importlib.import_module(script)  # BENCH is on sys.path here
    with pytest.raises(SystemExit) as exc:
        module.parse_args(['--help'])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert '--json' in text and '--device' in text and '--repeats' in text
    args = module.parse_args(['--device', 'cpu', '--repeats', '2'])
    assert args.repeats == 2 and args.json is None
