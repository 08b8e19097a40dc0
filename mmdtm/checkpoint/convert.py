"""Checkpoint conversion for transfer: pure functions on state dicts.

Two conversions, both exhaustive (a key that no rule maps is an error, never
silently dropped):

* :func:`dtm_to_backbone`: an mmdtm pre-training checkpoint (``backbone.*``,
  ``neck.*``, ``head.loss_module.schedule_state``) to the backbone state dict
  a downstream BEiT-style ViT (``DTMViT``) loads. The shared relative
  position bias is folded into every block's own table (per-block + shared,
  exactly the bias the student added to its attention logits), the mask
  token is dropped and, unless kept, the final norm (mean-pooling
  fine-tuning and UPerNet replace it by fresh layers).
* :func:`reference_to_mmdtm`: a checkpoint of the reference implementation
  (BEiT-style key names under ``model``) to mmdtm's pre-training layout.
"""
import re
from typing import List, Optional, Sequence, Tuple

from .compare import DERIVED_KEY, CheckpointMismatchError, format_keys
from .io import StateDict, progress
from .rel_pos import REL_TABLE, resize_rel_pos_table


# -------------------------------------------------- mmdtm -> downstream ViT
def split_prefix(state: StateDict, prefix: str) -> Tuple[StateDict, List[str]]:
    """Keys under ``prefix`` (prefix removed) and the keys outside it."""
    inside = {k[len(prefix):]: v for k, v in state.items()
              if k.startswith(prefix)}
    outside = [k for k in state if not k.startswith(prefix)]
    return inside, outside


def _layer_ids(state: StateDict,
               pattern: str = r'^layers\.(\d+)\.') -> List[int]:
    ids = {int(m.group(1)) for k in state
           for m in [re.match(pattern, k)] if m}
    return sorted(ids)


def fold_shared_rel_pos_bias(backbone: StateDict) -> StateDict:
    """Per-block tables := per-block + shared (or a copy of the shared one
    where a block has none); the shared ``rel_pos_bias.*`` keys go away.

    Exact: both tables are indexed by the same relative-position index, so
    ``(T_i + S)[idx] == T_i[idx] + S[idx]``, the sum the student used.
    """
    shared_key = f'rel_pos_bias.{REL_TABLE}'
    if shared_key not in backbone:
        return dict(backbone)
    out = {k: v for k, v in backbone.items()
           if not k.startswith('rel_pos_bias.')}
    shared = backbone[shared_key]
    layers = _layer_ids(backbone)
    if not layers:
        raise CheckpointMismatchError(
            'no layers.{i}.* keys next to the shared relative position bias')
    for i in layers:
        key = f'layers.{i}.attn.{REL_TABLE}'
        own = backbone.get(key)
        if own is not None and own.shape != shared.shape:
            raise CheckpointMismatchError(
                f'{key} has shape {tuple(own.shape)} but the shared table '
                f'has {tuple(shared.shape)}')
        out[key] = shared.clone() if own is None else own + shared
        idx = f'layers.{i}.attn.relative_position_index'
        shared_idx = backbone.get('rel_pos_bias.relative_position_index')
        if idx not in out and shared_idx is not None:
            out[idx] = shared_idx.clone()
    return out


#: Pre-training-only backbone keys, dropped for every downstream task.
PRETRAIN_ONLY = ('mask_token',)
#: Keys outside the backbone that a pre-training checkpoint may hold.
NON_BACKBONE_PREFIXES = ('neck.', 'head.', 'target_generator.',
                         'data_preprocessor.')


def dtm_to_backbone(state: StateDict, keep_final_norm: bool = False,
                    window: Optional[Sequence[int]] = None,
                    prefix: str = 'backbone.') -> StateDict:
    """mmdtm pre-training state dict -> downstream ``DTMViT`` backbone keys.

    Args:
        state: the pre-training ``state_dict`` (``backbone.*``, ``neck.*``,
            ``head.*``; a teacher, if a foreign checkpoint holds one).
        keep_final_norm: keep ``ln1`` (the final LayerNorm); linear probing
            keeps it, fine-tuning with mean pooling and UPerNet drop it.
        window: (Wh, Ww) patch grid of the downstream model; tables are
            resized when it differs from the pre-training one.
        prefix: the backbone prefix in ``state``.

    Returns:
        backbone state dict without prefix (derived index buffers dropped).

    Raises:
        CheckpointMismatchError: no key under ``prefix``, or a key outside the
            backbone that is not a known pre-training component.
    """
    backbone, outside = split_prefix(state, prefix)
    if not backbone:
        raise CheckpointMismatchError(
            f'no key starts with {prefix!r}; is this an mmdtm pre-training '
            f'checkpoint? first keys: {format_keys(list(state)[:10])}')
    unknown = [k for k in outside if not k.startswith(NON_BACKBONE_PREFIXES)]
    if unknown:
        raise CheckpointMismatchError(
            f'keys outside {prefix!r} that are not neck/head/teacher: '
            f'{format_keys(unknown)}', unexpected=unknown)
    out = fold_shared_rel_pos_bias(backbone)
    for key in PRETRAIN_ONLY:
        out.pop(key, None)
    if not keep_final_norm:
        for key in [k for k in out if k.startswith('ln1.')]:
            out.pop(key)
    out = {k: v for k, v in out.items() if not DERIVED_KEY.search(k)}
    if window is not None:
        for key in [k for k in out if k.endswith(REL_TABLE)]:
            out[key] = resize_rel_pos_table(out[key], window)
    return out


# ------------------------------------------------- reference -> mmdtm
_BLOCK_RULES = (  # reference suffix -> mmdtm suffix, inside blocks.{i}.
    ('norm1.weight', 'ln1.weight'), ('norm1.bias', 'ln1.bias'),
    ('attn.qkv.weight', 'attn.qkv.weight'),
    ('attn.q_bias', 'attn.q_bias'), ('attn.v_bias', 'attn.v_bias'),
    (f'attn.{REL_TABLE}', f'attn.{REL_TABLE}'),
    ('attn.proj.weight', 'attn.proj.weight'),
    ('attn.proj.bias', 'attn.proj.bias'),
    ('norm2.weight', 'ln2.weight'), ('norm2.bias', 'ln2.bias'),
    ('mlp.fc1.weight', 'ffn.layers.0.0.weight'),
    ('mlp.fc1.bias', 'ffn.layers.0.0.bias'),
    ('mlp.fc2.weight', 'ffn.layers.1.weight'),
    ('mlp.fc2.bias', 'ffn.layers.1.bias'),
    ('gamma_1', 'gamma_1'), ('gamma_2', 'gamma_2'),
)
_BLOCK_OPTIONAL = {'attn.relative_position_index'}
_TOP_RULES = (  # reference key -> mmdtm key
    ('patch_embed.proj.weight', 'backbone.patch_embed.projection.weight'),
    ('patch_embed.proj.bias', 'backbone.patch_embed.projection.bias'),
    ('cls_token', 'backbone.cls_token'),
    ('mask_token', 'backbone.mask_token'),
    (f'rel_pos_bias.{REL_TABLE}', f'backbone.rel_pos_bias.{REL_TABLE}'),
    ('norm.weight', 'backbone.ln1.weight'),
    ('norm.bias', 'backbone.ln1.bias'),
    ('lm_head.weight', 'neck.proj.weight'),
    ('lm_head.bias', 'neck.proj.bias'),
)
_TOP_OPTIONAL = {'rel_pos_bias.relative_position_index':
                 'backbone.rel_pos_bias.relative_position_index'}


def reference_to_mmdtm(ref: StateDict,
                       skip_prefixes: Sequence[str] = ()) -> StateDict:
    """Reference (BEiT-style) pre-training keys -> mmdtm's layout.

    Every key must be mapped or under ``skip_prefixes`` (e.g. ``teacher.``);
    every block must carry the full set of block keys.

    Returns:
        ``backbone.*`` and ``neck.proj.*`` tensors for ``DTM``.

    Raises:
        CheckpointMismatchError: listing unmapped keys and missing keys.
    """
    top = dict(_TOP_RULES)
    block = dict(_BLOCK_RULES)
    out: StateDict = {}
    unmapped, seen_blocks = [], {}
    for key, value in progress(ref.items(), total=len(ref), desc='convert',
                               unit='tensor', disable=len(ref) < 500):
        if key.startswith(tuple(skip_prefixes)):
            continue
        if key in top:
            out[top[key]] = value
            continue
        if key in _TOP_OPTIONAL:
            out[_TOP_OPTIONAL[key]] = value
            continue
        m = re.match(r'^blocks\.(\d+)\.(.+)$', key)
        if m and (m.group(2) in block or m.group(2) in _BLOCK_OPTIONAL):
            i, suffix = int(m.group(1)), m.group(2)
            seen_blocks.setdefault(i, set()).add(suffix)
            out[f'backbone.layers.{i}.{block.get(suffix, suffix)}'] = value
            continue
        unmapped.append(key)
    missing = [k for k in top if k not in ref]
    if not seen_blocks:
        missing.append('blocks.{i}.*')
    else:
        depth = max(seen_blocks) + 1
        for i in range(depth):
            for suffix in block:
                if suffix not in seen_blocks.get(i, ()):
                    missing.append(f'blocks.{i}.{suffix}')
    if unmapped or missing:
        raise CheckpointMismatchError(
            f'cannot convert the reference checkpoint: '
            f'{len(unmapped)} unmapped keys {format_keys(unmapped)}; '
            f'{len(missing)} missing keys {format_keys(missing)}',
            missing=missing, unexpected=unmapped)
    return out
