"""Build-time checks shared by the algorithms that carry DTM parts."""
from torch import nn


def check_dtm_parts(neck: nn.Module, head: nn.Module,
                    target_generator: nn.Module, num_tokens: int,
                    prefix: str = '') -> None:
    """Raise, naming the config field, when the DTM parts do not fit.

    Args:
        neck: maps student features to (B, N, D); exposes ``out_channels``.
        head: a ``DTMHead`` (``loss_module.check_num_tokens``).
        target_generator: the teacher; exposes ``out_dim``, ``num_patches``.
        num_tokens: N, the student's patch tokens.
        prefix: the fields' prefix in the config, e.g. ``'dtm_'``.
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
        raise ValueError(
            f'the teacher ({prefix}target_generator) has {teacher_n} patches '
            f'but the student (backbone) has {num_tokens}; use matching '
            f'image and patch sizes')
    try:
        head.loss_module.check_num_tokens(num_tokens)
    except ValueError as err:
        raise ValueError(f'{prefix}head.loss.{err}') from err
