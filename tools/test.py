"""Evaluate a checkpoint with an MMEngine config that has a test loop.

    python tools/test.py CONFIG CHECKPOINT [--out results.pkl] [--cfg-options ...]
    tools/test.sh CONFIG CHECKPOINT GPUS [flags]

CHECKPOINT is a local path or a URL. Pre-training configs have no test loop:
evaluate a pre-trained model through a fine-tuning / linear-probing config.
"""
import argparse
import os
import os.path as osp
import sys
from typing import List, Optional

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from mmengine.config import Config, DictAction  # noqa: E402
from torch.distributed.elastic.multiprocessing.errors import \
    record  # noqa: E402

from mmdtm import setup_checkpoint_loading  # noqa: E402
from mmdtm.datasets import check_data_roots  # noqa: E402
from mmdtm.engine import build_runner  # noqa: E402
from mmdtm.engine.cuda_check import check_cuda_usable  # noqa: E402
from mmdtm.engine.launch import (LAUNCHERS, close_group,  # noqa: E402
                                cpu_distributed_fallback)

TEST_KEYS = ('test_dataloader', 'test_evaluator', 'test_cfg')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test a model (mmdtm)')
    parser.add_argument('config', help='config file with a test loop')
    parser.add_argument('checkpoint', help='checkpoint path or URL')
    parser.add_argument('--work-dir', help='where the test logs go')
    parser.add_argument('--out', help='also dump the predictions to this '
                        '.pkl file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        default=None, help='override config keys')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    missing = [k for k in TEST_KEYS if cfg.get(k) is None]
    if missing:
        raise KeyError(
            f'{args.config} has no {missing}: nothing to evaluate. A '
            f'pre-training config has no test loop; evaluate the pre-trained '
            f'backbone with a fine-tuning or linear-probing config.')
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        name = osp.splitext(osp.basename(args.config))[0]
        cfg.work_dir = osp.join('work_dirs', name)
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.out:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out must be a .pkl file, got {args.out!r}')
        evaluators = cfg.test_evaluator
        if not isinstance(evaluators, (list, tuple)):
            evaluators = [evaluators]
        cfg.test_evaluator = list(evaluators) + [
            dict(type='DumpResults', out_file_path=args.out)]
    return cfg


@record  # torchrun's summary then shows this process's exception
def main(argv: Optional[List[str]] = None) -> dict:
    """Run the test loop; returns the metrics."""
    args = parse_args(argv)
    check_cuda_usable()  # GPUs visible but unusable: refuse, never CPU
    setup_checkpoint_loading()  # process-wide, see README
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'config file not found: {args.config}')
    cfg = merge_args(Config.fromfile(args.config), args)
    check_data_roots(cfg, ('test_dataloader',))  # names the key to set
    cpu_distributed_fallback(cfg, args.launcher)
    runner = build_runner(cfg)
    metrics = runner.test()
    close_group()
    return metrics


if __name__ == '__main__':
    main()
