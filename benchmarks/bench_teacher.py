"""Where a DTM step's time goes: the CLIP teacher against the student.

Times per image, side by side in one process:

* the frozen CLIP ViT-B/16 teacher (``CLIPTargetGenerator``, random
  weights, same cost as the real ones) in fp32 and under bf16 autocast, each
  with ``torch.no_grad`` and with ``torch.inference_mode``;
* the student's forward + backward (BEiT-style ViT with mask tokens, then
  the ``DTMNeck``; a plain squared loss stands in for DTM's) in fp32 and
  under bf16 autocast, for each ``--students``.

Ratios are teacher / student forward+backward at the same precision. On a
CPU without native bf16 (no AVX512-BF16 / AMX), bf16 autocast is slower
than fp32; the GPU numbers are the ones that matter for bf16.

Example::

    OMP_NUM_THREADS=2 python benchmarks/bench_teacher.py --json teacher.json
    python benchmarks/bench_teacher.py --device cuda --batch 64
"""
import argparse
import contextlib
from typing import Dict

import torch

import common  # noqa: I100  (benchmarks/common.py, next to this script)
from bench_train_step import CONFIGS, build_model


def autocast(device: torch.device, precision: str):
    if precision == 'fp32':
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--students', nargs='+', default=['small', 'base'],
                        choices=sorted(CONFIGS),
                        help='students: small = ViT-S/16, base = ViT-B/16')
    parser.add_argument('--batch', type=int, default=8,
                        help='images per call (default 8: at batch 1 '
                        'per-operator overhead hides what a training step '
                        'costs)')
    parser.add_argument('--precisions', nargs='+', default=None,
                        choices=['fp32', 'bf16'],
                        help='default: fp32 and bf16 on CUDA, fp32 on a CPU '
                        '(CPUs without native bf16 run it up to 30x slower)')
    common.add_common_args(parser, repeats=3, warmup=1)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    device = common.setup(args)
    if args.batch < 1:
        raise SystemExit(f'--batch must be >= 1, got {args.batch}')
    if args.precisions is None:
        args.precisions = ['fp32', 'bf16'] if device.type == 'cuda' else [
            'fp32']
    if args.batch < 8:
        print(f'# note: batch {args.batch} < 8 measures per-operator '
              f'overhead more than a training step')
    info = common.machine_info(device)
    print(f"# bench_teacher on {info['device']} ({info.get('gpu', info['cpu'])}"
          f", torch {info['torch']}, {info['torch_threads']} threads), "
          f"batch {args.batch}")

    models = {key: build_model(key, device)[0] for key in args.students}
    teacher = models[args.students[0]].target_generator
    h, w = models[args.students[0]].backbone.patch_resolution
    g = torch.Generator().manual_seed(args.seed)
    img = torch.randn(args.batch, 3, h * 16, w * 16, generator=g).to(device)
    n = h * w
    keys = torch.rand(args.batch, n, generator=g)
    mask = torch.zeros(args.batch, n, dtype=torch.bool)
    mask.scatter_(1, keys.argsort(1)[:, :round(n * 75 / 196)], True)
    mask = mask.view(args.batch, h, w).to(device)

    def teacher_call(precision: str, inference: bool):
        def run():
            teacher.inference_mode = inference
            with autocast(device, precision):
                return teacher(img)
        return run

    def student_call(key: str, precision: str):
        model = models[key]

        def run():
            with autocast(device, precision):
                pred = model.neck(model.backbone(img, mask))
            pred.float().square().mean().backward()
            model.zero_grad(set_to_none=True)
            return None
        return run

    arms: Dict[str, object] = {}
    for precision in args.precisions:
        for inference in (False, True):
            mode = 'inference_mode' if inference else 'no_grad'
            arms[f'teacher {precision} {mode}'] = teacher_call(precision,
                                                                inference)
        for key in args.students:
            arms[f'student-{key} {precision} fwd+bwd'] = student_call(
                key, precision)
    times = common.time_interleaved(arms, device, args.repeats, args.warmup)
    teacher.inference_mode = True
    per_image = {name: common.median(t) / args.batch for name, t in
                 times.items()}

    rows, summary = [], {}
    for name, sec in per_image.items():
        precision = name.split()[1]
        row = dict(arm=name, ms_per_image=1e3 * sec)
        if name.startswith('teacher'):
            for key in args.students:
                ref = per_image[f'student-{key} {precision} fwd+bwd']
                row[f'vs_student_{key}'] = sec / ref
        rows.append(row)
    common.print_table(
        ['arm', 'ms / image'] + [f'teacher / student-{k} fwd+bwd'
                                 for k in args.students],
        [[r['arm'], r['ms_per_image']] +
         [r.get(f'vs_student_{k}', '') for k in args.students]
         for r in rows],
        title=f'batch {args.batch}, median of {args.repeats} interleaved '
        f'repetitions after {args.warmup} warm-up')
    for precision in args.precisions:
        for key in args.students:
            summary[f'teacher_vs_{key}_{precision}'] = (
                per_image[f'teacher {precision} inference_mode'] /
                per_image[f'student-{key} {precision} fwd+bwd'])
        summary[f'inference_vs_no_grad_{precision}'] = (
            per_image[f'teacher {precision} inference_mode'] /
            per_image[f'teacher {precision} no_grad'])
    if 'fp32' in args.precisions and 'bf16' in args.precisions:
        summary['teacher_bf16_vs_fp32'] = (
            per_image['teacher bf16 inference_mode'] /
            per_image['teacher fp32 inference_mode'])
    common.finish('teacher', summary,
                  dict(machine=info, args=vars(args), rows=rows,
                       times_s=times), args.json)


if __name__ == '__main__':
    main()
