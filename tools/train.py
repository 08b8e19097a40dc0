"""Train a model from an MMEngine config (MMPretrain's ``tools/train.py`` flags).

Single process::

    python tools/train.py configs/dtm/dtm_vit-tiny-p16_1xb8-40iter_toy.py

Several processes (one per GPU, or CPU processes with the gloo backend when
no CUDA device exists): ``tools/train.sh CONFIG GPUS [flags]``.

Exit codes: 0 done; 75 pre-empted (a signal of ``PreemptionHook``: the
checkpoint is written, resume with ``--resume auto``); others: failed.
"""
import argparse
import os
import os.path as osp
import sys
from typing import List, Optional

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO not in sys.path:  # a fresh clone works without `pip install -e .`
    sys.path.insert(0, REPO)

import torch  # noqa: E402
from mmengine.config import Config, ConfigDict, DictAction  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from torch.distributed.elastic.multiprocessing.errors import \
    record  # noqa: E402

from mmdtm import setup_checkpoint_loading  # noqa: E402
from mmdtm.datasets import check_data_roots  # noqa: E402
from mmdtm.engine import (PREEMPTED_EXIT_CODE, Preempted,  # noqa: E402
                          build_runner)
from mmdtm.engine.cuda_check import check_cuda_usable  # noqa: E402
from mmdtm.engine.hooks import failures_end_preemption  # noqa: E402
from mmdtm.engine.launch import (LAUNCHERS, close_group,  # noqa: E402
                                cpu_distributed_fallback, prepare_restart)
from mmdtm.engine.lost_ranks import report_lost_ranks  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model (mmdtm)')
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: work_dirs/<config name>)')
    parser.add_argument(
        '--resume', nargs='?', const='auto', metavar='CKPT',
        help="resume from CKPT (a path or URL); '--resume' alone or "
        "'--resume auto' resumes from the latest checkpoint in the work dir")
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision (AmpOptimWrapper; needs a GPU)')
    parser.add_argument('--no-validate', action='store_true',
                        help='skip validation during training')
    parser.add_argument(
        '--auto-scale-lr', action='store_true',
        help='scale the lr by total batch / auto_scale_lr.base_batch_size')
    parser.add_argument('--no-pin-memory', action='store_true')
    parser.add_argument('--no-persistent-workers', action='store_true')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, default=None,
        help='override config keys, e.g. train_cfg.max_iters=10 '
        'model.target_generator.pretrained=/path/to/clip.bin')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none')
    # torch.distributed.launch passes --local-rank (torchrun sets LOCAL_RANK)
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def _dataloader_defaults(cfg: Config, args: argparse.Namespace) -> None:
    """MMPretrain's dataloader defaults plus the --no-* switches.

    A ``collate_fn`` inherited from another package's config
    (``_base_ = ['mmdtm::...']``) carries the ``_scope_`` MMEngine tags it
    with, which the Runner would pass on to the function: dropped here.
    """
    for field in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(field)
        if loader is None:
            continue
        merged = ConfigDict(pin_memory=torch.cuda.is_available(),
                            persistent_workers=True,
                            collate_fn=dict(type='default_collate'))
        merged.update(loader)
        if isinstance(merged.collate_fn, dict):
            merged.collate_fn.pop('_scope_', None)
        if merged.get('num_workers', 0) == 0:
            merged.persistent_workers = False  # torch refuses it otherwise
        if args.no_pin_memory:
            merged.pin_memory = False
        if args.no_persistent_workers:
            merged.persistent_workers = False
        cfg[field] = merged


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Apply the command-line flags to ``cfg`` (flags win over the file)."""
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        name = osp.splitext(osp.basename(args.config))[0]
        cfg.work_dir = osp.join('work_dirs', name)
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    if args.amp:
        if not torch.cuda.is_available():
            raise RuntimeError(
                '--amp needs a GPU: MMEngine\'s AmpOptimWrapper refuses to '
                'run without CUDA. Drop --amp for CPU runs.')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise KeyError(
                f'--auto-scale-lr: {args.config} has no '
                f'auto_scale_lr.base_batch_size (the total batch its lr is '
                f'tuned for); add it or pass --cfg-options '
                f'auto_scale_lr.base_batch_size=N')
        cfg.auto_scale_lr.enable = True
    _dataloader_defaults(cfg, args)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


@record  # torchrun's summary then shows this process's exception
def main(argv: Optional[List[str]] = None) -> Runner:
    args = parse_args(argv)
    check_cuda_usable()  # GPUs visible but unusable: refuse, never CPU
    setup_checkpoint_loading()  # process-wide, see README
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'config file not found: {args.config}')
    cfg = merge_args(Config.fromfile(args.config), args)
    check_data_roots(cfg, ('train_dataloader',))  # names the key to set
    cpu_distributed_fallback(cfg, args.launcher)  # the group, on CPU
    prepare_restart(cfg, args.launcher)
    runner = build_runner(cfg)
    try:
        with report_lost_ranks(runner):  # names ranks lost by a collective
            with failures_end_preemption(runner):
                runner.train()
            close_group()
    except Preempted:  # the checkpoint is written (PreemptionHook)
        close_group()
        sys.exit(PREEMPTED_EXIT_CODE)
    return runner


if __name__ == '__main__':
    main()
