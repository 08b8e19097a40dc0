"""Draw the groups DTM's morphing finds on an image, for several schedules.

    python tools/visualize_morphing.py IMAGE [IMAGE ...] \
        [--config configs/dtm_vitb.py] [--pretrained PATH|TAG|none] \
        [--schedules identity 16x4 49x2 90x2] [--out work_dirs/morphing.png]

The partition comes from the teacher of ``--config``
(``model.target_generator``); ``--pretrained none`` uses a randomly
initialised teacher (no download). Each column is one schedule (R merges per
round x K rounds); per image a tinted row and a flat group-map row, headed by
the number of groups.
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from mmengine.config import Config, DictAction  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('images', nargs='+', help='image files')
    parser.add_argument('--config', default=osp.join(REPO, 'configs',
                                                     'dtm_vitb.py'),
                        help='config whose model.target_generator is the '
                        'teacher')
    parser.add_argument('--pretrained', help="override the teacher's "
                        "weights: a file, an open_clip tag, or 'none'")
    parser.add_argument('--schedules', nargs='+', default=None,
                        help="'identity' or RxK, e.g. 16x4 (default: "
                        'identity 16x4 49x2 90x2, scaled to the patch count)')
    parser.add_argument('--out', default='work_dirs/morphing.png')
    parser.add_argument('--panel-size', type=int, default=224)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        default=None)
    parser.add_argument('--device', default='cpu')
    return parser.parse_args(argv)


def build_teacher(cfg: Config, pretrained: Optional[str] = None):
    """The config's ``model.target_generator``, optionally re-weighted."""
    import mmdtm  # noqa: F401  (registers CLIPTargetGenerator)
    from mmdtm.registry import MODELS
    gen_cfg = cfg.model.target_generator.copy()
    if pretrained is not None:
        gen_cfg.pretrained = None if pretrained.lower() == 'none' \
            else pretrained
    return MODELS.build(gen_cfg)


def main(argv: Optional[List[str]] = None):
    args = parse_args(argv)
    for path in [args.config] + args.images:
        if not osp.isfile(path):
            raise FileNotFoundError(f'no such file: {path}')
    from mmdtm.visualization.morph_vis import morphing_grid, parse_schedule
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    teacher = build_teacher(cfg, args.pretrained).to(args.device)
    loss = cfg.model.head.loss
    prep = cfg.model.get('data_preprocessor', {})
    schedules = ([parse_schedule(s) for s in args.schedules]
                 if args.schedules else None)
    extra = {k: prep[k] for k in ('mean', 'std') if k in prep}
    canvas, panels = morphing_grid(
        teacher, args.images, schedules, out_file=args.out,
        panel_size=args.panel_size,
        protect_first=loss.get('protect_first', True),
        split=loss.get('split', 'alternate'), **extra)
    counts = ', '.join(f'{p.schedule.name}: {p.num_groups}'
                       for p in panels if p.flat)
    print(f'wrote {args.out} ({canvas.width}x{canvas.height}); groups per '
          f'panel: {counts}')
    return canvas, panels


if __name__ == '__main__':
    main()
