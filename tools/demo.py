"""`make demo`: a short DTM pre-training on real photographs, on CPU.

Trains the demo config on the public-domain / CC0 photographs in
demo/images/ and writes into the work dir (default work_dirs/demo/):

* ``iter_<N>.pth``        the checkpoint (student, neck, head, schedule state)
* ``loss_curve.png``      the training loss per iteration
* ``morphing.png``        the groups DTM's morphing finds on two photographs,
                          for several schedules (tools/visualize_morphing.py)

The teacher is randomly initialised (no weights are downloaded); the log says
so. ``--iters`` shortens the schedule (the tests use a few iterations).
"""
import argparse
import os
import os.path as osp
import sys
import time
from typing import Dict, List, Optional

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from mmengine.config import Config, DictAction  # noqa: E402

DEMO_CFG = osp.join(REPO, 'configs', 'dtm',
                    'dtm_vit-tiny-p16_1xb16-300iter_demo.py')
DEMO_IMAGES = osp.join(REPO, 'demo', 'images')
MORPH_IMAGES = ('astronaut.jpg', 'chelsea.jpg')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='mmdtm demo')
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--config', default=DEMO_CFG)
    parser.add_argument('--images', default=DEMO_IMAGES,
                        help='folder of training images')
    parser.add_argument('--iters', type=int, default=None,
                        help='training iterations (default: the config\'s)')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads (1 is fastest for this tiny '
                        'model, and on a busy machine)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        default=None)
    return parser.parse_args(argv)


def demo_config(args: argparse.Namespace) -> Config:
    """The demo config with the work dir, data and schedule length set."""
    from mmdtm.engine.schedules import shorten_schedule
    cfg = Config.fromfile(args.config)
    cfg.work_dir = osp.abspath(args.work_dir)
    cfg.train_dataloader.dataset.data_root = osp.abspath(args.images)
    cfg.launcher = 'none'
    if args.iters is not None:
        if args.iters < 1:
            raise ValueError(f'--iters must be >= 1, got {args.iters}')
        shorten_schedule(cfg, args.iters)
    iters = cfg.train_cfg.max_iters
    cfg.default_hooks.checkpoint.interval = iters
    cfg.default_hooks.logger.interval = max(1, min(10, iters // 10))
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def main(argv: Optional[List[str]] = None) -> Dict[str, str]:
    """Train, then draw; returns the paths written and the wall time."""
    args = parse_args(argv)
    for path in (args.config, args.images):
        if not osp.exists(path):
            raise FileNotFoundError(f'demo input not found: {path}')
    import torch
    start = time.time()
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, args.threads))
    try:
        return _run(args, start)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, start: float) -> Dict[str, str]:
    """Train with the Runner, then plot the loss and draw the morphing."""
    import torch

    from mmpretrain.utils import get_ori_model

    from mmdtm.engine import build_runner
    from mmdtm.models.target_generators.frozen_teacher import \
        random_init_warning
    from mmdtm.visualization.loss_curve import plot_losses, read_losses
    from mmdtm.visualization.morph_vis import morphing_grid
    cfg = demo_config(args)
    device = 'GPU' if torch.cuda.is_available() else 'CPU'
    random_teacher = cfg.model.target_generator.get('pretrained') is None
    iters = cfg.train_cfg.max_iters
    print(f'mmdtm demo: {iters} iterations of DTM pre-training on the '
          f'photographs in {args.images}, on {device}; progress and ETA are '
          f'logged every {cfg.default_hooks.logger.interval} iterations. '
          f'Output: {cfg.work_dir}', flush=True)
    if random_teacher:
        teacher = cfg.model.target_generator
        print('mmdtm demo: NOTE ' + random_init_warning(
            'model.target_generator', teacher.get('model_name', teacher.type)),
            flush=True)
    runner = build_runner(cfg)
    runner.train()

    ckpt = osp.join(cfg.work_dir, f'iter_{iters}.pth')
    loss_png = osp.join(cfg.work_dir, 'loss_curve.png')
    morph_png = osp.join(cfg.work_dir, 'morphing.png')
    losses = read_losses(runner.log_dir)
    plot_losses(losses, loss_png,
                f'DTM demo: {len(losses)} logged iterations' +
                (', random teacher' if random_teacher else ''))
    model = get_ori_model(runner.model)
    loss_cfg = cfg.model.head.loss
    prep = cfg.model.data_preprocessor
    images = [osp.join(args.images, name) for name in MORPH_IMAGES
              if osp.isfile(osp.join(args.images, name))]
    if not images:  # another folder: its first two images
        images = [osp.join(args.images, name)
                  for name in sorted(os.listdir(args.images))
                  if name.lower().endswith(('.jpg', '.jpeg', '.png'))][:2]
    _, panels = morphing_grid(
        model.target_generator, images, out_file=morph_png,
        protect_first=loss_cfg.get('protect_first', True),
        split=loss_cfg.get('split', 'alternate'),
        mean=prep.mean, std=prep.std)
    wall = time.time() - start
    counts = ', '.join(f'{p.schedule.name}: {p.num_groups}'
                       for p in panels[:len(panels) // len(images)]
                       if p.flat)
    print(f'mmdtm demo: done in {wall:.0f} s.\n'
          f'  checkpoint : {ckpt}\n'
          f'  loss curve : {loss_png} (loss {losses[min(losses)]:.4f} at '
          f'iteration {min(losses)} -> {losses[max(losses)]:.4f} at '
          f'{max(losses)})\n'
          f'  morphing   : {morph_png} (groups per schedule: {counts})',
          flush=True)
    return dict(checkpoint=ckpt, loss_curve=loss_png, morphing=morph_png,
                wall_s=f'{wall:.1f}')


if __name__ == '__main__':
    main()
