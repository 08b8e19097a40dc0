#!/usr/bin/env python
"""Spatial consistency of a CLIP teacher's per-token zero-shot predictions,
with and without DTM's morphing (the paper's pilot study).

    python tools/analysis/spatial_consistency.py IMAGES \
        [--model-name ViT-B-16-quickgelu] [--pretrained openai|FILE|none] \
        [--class-names FILE] [--boxes XML_DIR] \
        [--schedules identity 16x4 49x2 90x2] [--out-dir DIR]

IMAGES is an ImageNet-style folder (``IMAGES/<label index or class
name>/*.jpg``) or a ``path label`` list file (e.g. ImageNet's
``meta/val.txt`` with ``--image-root data/imagenet/val``). Writes
``DIR/spatial_consistency.json`` (per-schedule summary and per-image scores)
and ``DIR/spatial_consistency.png``, and prints the summary table.
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import List, Optional

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('images', help='image folder or "path label" list')
    parser.add_argument('--image-root', default=None,
                        help="folder of the list file's paths (default: the "
                        "list file's folder)")
    parser.add_argument('--model-name', default='ViT-B-16-quickgelu',
                        help='open_clip model name (OpenAI weights need the '
                        '-quickgelu variants)')
    parser.add_argument('--pretrained', default='openai',
                        help="open_clip tag, a full open_clip checkpoint "
                        "file, or 'none' (random weights)")
    parser.add_argument('--model-kwargs', default=None,
                        help='JSON overrides of the open_clip model config')
    parser.add_argument('--cache-dir', default=None)
    parser.add_argument('--class-names', default=None,
                        help='one class name per line, line i = label i '
                        "(default: ImageNet-1K's 1000 names)")
    parser.add_argument('--templates', default='default',
                        choices=['default', 'openai'],
                        help="prompts: 'a photo of a {}.' or CLIP's 80 "
                        'ImageNet templates (averaged)')
    parser.add_argument('--boxes', default=None,
                        help='folder of Pascal VOC XML box files, one '
                        '<image stem>.xml per image (ImageNet val boxes)')
    parser.add_argument('--schedules', nargs='+', default=None,
                        help="'identity' or RxK (K rounds of R merges); "
                        'default identity 16x4 49x2 90x2, scaled to the '
                        'patch count')
    parser.add_argument('--input-norm', default='imagenet',
                        choices=['imagenet', 'clip'],
                        help="teacher input normalisation ('imagenet' = the "
                        "DTM reference's)")
    parser.add_argument('--split', default='alternate',
                        choices=['alternate', 'random'])
    parser.add_argument('--no-protect-first', action='store_true',
                        help='let patch 0 merge (the paper; the reference '
                        'protects it)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out-dir', default='work_dirs/spatial_consistency')
    parser.add_argument('--vis-num', type=int, default=8,
                        help='images in the picture (the first ones)')
    parser.add_argument('--panel-size', type=int, default=224)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--no-progress', action='store_true')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    import mmdtm  # noqa: F401  (registers CLIPTargetGenerator)
    from mmdtm.analysis import format_table, run_probe
    from mmdtm.analysis.probe_data import read_class_names, read_samples
    from mmdtm.analysis.zero_shot import (imagenet_class_names,
                                          zero_shot_teacher)
    from mmdtm.visualization.morph_vis import default_schedules, parse_schedule

    pretrained = None if args.pretrained.lower() == 'none' \
        else args.pretrained
    kwargs = json.loads(args.model_kwargs) if args.model_kwargs else {}
    if args.class_names:
        names, names_from = read_class_names(args.class_names), \
            args.class_names
    else:
        names, names_from = imagenet_class_names(), \
            "ImageNet-1K's class names"
    samples = read_samples(args.images, names, args.image_root, names_from)
    if args.boxes is not None and not osp.isdir(args.boxes):
        raise FileNotFoundError(f'--boxes: no such folder: {args.boxes}')
    schedules = ([parse_schedule(s) for s in args.schedules]
                 if args.schedules else None)
    teacher, text = zero_shot_teacher(
        args.model_name, pretrained, names, args.templates, kwargs,
        args.cache_dir, args.input_norm, args.device)
    schedules = schedules or default_schedules(teacher.num_patches)

    report, picture, _ = run_probe(
        teacher, text, samples, names, schedules, boxes_dir=args.boxes,
        protect_first=not args.no_protect_first, split=args.split,
        seed=args.seed, vis_num=args.vis_num, panel_size=args.panel_size,
        progress=not args.no_progress)
    report.update(model_name=args.model_name, pretrained=args.pretrained,
                  model_kwargs=kwargs, templates=args.templates,
                  input_norm=args.input_norm, images_source=args.images,
                  class_names=names_from)
    os.makedirs(args.out_dir, exist_ok=True)
    json_path = osp.join(args.out_dir, 'spatial_consistency.json')
    with open(json_path, 'w', encoding='utf-8') as f:
        json.dump(report, f, indent=1)
    png_path = None
    if picture is not None:
        png_path = osp.join(args.out_dir, 'spatial_consistency.png')
        picture.save(png_path)
    print(f'{args.model_name} ({args.pretrained}), {len(samples)} images'
          f'{", token accuracy inside boxes" if args.boxes else ""}:')
    print(format_table(report['summary']))
    print(f'wrote {json_path}' + (f' and {png_path}' if png_path else ''))
    return report


if __name__ == '__main__':
    main()
