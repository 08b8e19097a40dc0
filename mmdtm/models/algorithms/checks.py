"""Build-time checks shared by the algorithms that carry DTM parts."""
from typing import Optional, Sequence

from torch import nn


def check_dtm_parts(neck: nn.Module, head: nn.Module,
                    target_generator: nn.Module, num_tokens: int,
                    prefix: str = '',
                    student_grid: Optional[Sequence[int]] = None) -> None:
    """Raise, naming the config field, when the DTM parts do not fit.

    Args:
        neck: maps student features to (B, N, D); exposes ``out_channels``.
        head: a ``DTMHead`` (``check_num_tokens``).
        target_generator: the teacher; exposes ``out_dim``, ``num_patches``.
        num_tokens: N, the student's patch tokens.
        prefix: the fields' prefix in the config, e.g. ``'dtm_'``.
        student_grid: (h, w) patch grid of the student, named in the error.
    """
    teacher_dim = getattr(target_generator, 'out_dim', None)
    neck_dim = getattr(neck, 'out_channels', None)
    if None not in (teacher_dim, neck_dim) and teacher_dim != neck_dim:
        raise ValueError(
            f'{prefix}neck.out_channels={neck_dim} but the teacher '
            f'({prefix}target_generator) gives {teacher_dim}-d targets; set '
            f'{prefix}neck.out_channels={teacher_dim}')
    teacher_n = getattr(target_generator, 'num_patches', None)
    if teacher_n is not None and teacher_n != num_tokens:
        describe = getattr(target_generator, 'describe_grid', None)
        teacher = f'{teacher_n} patches' + (
            f' (grid {describe()})' if describe else '')
        student = f'{num_tokens} patches' + (
            f' (grid {student_grid[0]}x{student_grid[1]})'
            if student_grid is not None else '')
        fix = (f"set {prefix}target_generator.grid_match='resize_input' "
               f"(or 'resample_tokens') and out_grid="
               f'{tuple(student_grid)}, or use matching image and patch '
               f'sizes' if describe and student_grid is not None else
               'use matching image and patch sizes')
        raise ValueError(
            f'the teacher ({prefix}target_generator) has {teacher} but the '
            f'student (backbone) has {student}; {fix}')
    try:
        head.check_num_tokens(num_tokens)
    except ValueError as err:
        raise ValueError(f'{prefix}head.loss.{err}') from err
