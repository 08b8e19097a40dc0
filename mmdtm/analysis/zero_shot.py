"""Zero-shot classification of CLIP patch tokens against class prompts.

The DTM teacher's target for a patch is ``ln_post(token) @ visual.proj``:
the very map CLIP applies to its class token to get the image embedding, so
the projected patch tokens live in CLIP's joint image-text space and can be
compared with text embeddings by cosine similarity, exactly as CLIP
classifies whole images zero-shot.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmdtm.checkpoint.compare import compare_state_dict
from mmdtm.models.target_generators.clip_generator import (
    CLIPTargetGenerator, check_open_clip_name, create_open_clip)
from mmdtm.models.target_generators.frozen_teacher import (looks_like_path,
                                                           read_weights)

# CLIP's single default prompt; ``OPENAI_TEMPLATES`` selects open_clip's
# 80-template ImageNet ensemble instead.
DEFAULT_TEMPLATES = ('a photo of a {}.', )


class NoTextTowerError(ValueError):
    """The open_clip model or its weights have no usable text tower."""


def imagenet_class_names() -> List[str]:
    """The 1000 ImageNet-1K class names in label order: the first synonym of
    each of MMPretrain's ``IMAGENET_CATEGORIES`` (``'tench, Tinca tinca'``
    -> ``'tench'``)."""
    from mmpretrain.datasets.categories import IMAGENET_CATEGORIES
    return [name.split(',')[0].strip() for name in IMAGENET_CATEGORIES]


def prompt_templates(name: str) -> Sequence[str]:
    """``'default'`` ('a photo of a {}.') or ``'openai'`` (the 80 templates
    of CLIP's ImageNet evaluation, from open_clip)."""
    if name == 'default':
        return DEFAULT_TEMPLATES
    if name == 'openai':
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
        return [t('{}') for t in OPENAI_IMAGENET_TEMPLATES]
    raise ValueError(f"templates must be 'default' or 'openai', got {name!r}")


def load_text_model(model_name: str,
                    pretrained: Optional[str],
                    model_kwargs: Optional[dict] = None,
                    cache_dir: Optional[str] = None) -> nn.Module:
    """An open_clip model whose text tower is loaded; its image tower is
    dropped (the DTM teacher, :class:`CLIPTargetGenerator`, is the image
    side).

    Args:
        model_name: open_clip model name.
        pretrained: ``None`` (random weights), an open_clip tag (downloaded
            when online) or a full open_clip checkpoint file.
        model_kwargs: overrides of the open_clip model config.
        cache_dir: open_clip download cache.

    Raises:
        NoTextTowerError: the model has no ``encode_text``, or the weights
            file holds no text tower, e.g. a visual-tower-only file.
        CheckpointMismatchError: the file's text tower does not fit the
            model (missing or mis-shaped keys).
    """
    kwargs = dict(model_kwargs or {})
    check_open_clip_name(model_name)
    model = create_open_clip(model_name, pretrained, cache_dir, **kwargs)
    if not callable(getattr(model, 'encode_text', None)):
        raise NoTextTowerError(f'open_clip model {model_name!r} has no text '
                               f'tower (no encode_text)')
    if pretrained is not None and looks_like_path(pretrained):
        _load_text_weights(model, pretrained)
    model.visual = None  # the image side is the DTM teacher
    return model.eval().requires_grad_(False)


def _load_text_weights(model: nn.Module, path: str) -> None:
    """Load the text tower of a full open_clip checkpoint, compared key by
    key with the model's (:func:`~mmdtm.checkpoint.compare_state_dict`);
    the image tower's keys are left unused."""
    import open_clip
    state = read_weights(path, open_clip.factory.load_state_dict,
                         'CLIP text tower', 'Give a full open_clip '
                         'checkpoint (image and text towers).')
    text_model = {k: v for k, v in model.state_dict().items()
                  if not k.startswith('visual.')}
    if not any(k in state for k in text_model):
        raise NoTextTowerError(
            f'{path!r} holds no text tower (none of its {len(state)} keys '
            f'belongs to it, e.g. {sorted(text_model)[:3]}); a '
            f'visual-tower-only file can be a DTM teacher but cannot '
            f'classify zero-shot: give a full open_clip checkpoint')
    report = compare_state_dict(text_model, state,
                                allow_unexpected=[r'visual\.'])
    if not report.ok:
        raise report.error(f'the text tower in {path!r} does not fit open_clip '
                           f'{type(model).__name__}:\n{report.summary(path)}')
    model.load_state_dict({k: state[k] for k in text_model}, strict=False)


@torch.no_grad()
def text_embeddings(model: nn.Module,
                    tokenizer,
                    class_names: Sequence[str],
                    templates: Sequence[str] = DEFAULT_TEMPLATES,
                    batch_size: int = 256) -> Tensor:
    """(C, D) unit-norm class embeddings: per class, the mean of its
    normalised prompt embeddings, normalised again (CLIP's ensembling).

    Args:
        model: an open_clip model with ``encode_text``.
        tokenizer: ``open_clip.get_tokenizer(...)`` for that model.
        class_names: C names; ``templates`` are ``str.format`` patterns.
    """
    device = next(model.parameters()).device
    texts = [t.format(name) for name in class_names for t in templates]
    vocab = getattr(model, 'vocab_size', None)
    out = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(texts[start:start + batch_size]).to(device)
        if vocab is not None and int(tokens.max()) >= vocab:
            raise ValueError(f'the tokenizer produced id {int(tokens.max())} '
                             f'but the text tower has vocab_size={vocab}: '
                             f'tokenizer and model do not match')
        out.append(F.normalize(model.encode_text(tokens).float(), dim=-1))
    emb = torch.cat(out).view(len(class_names), len(templates), -1)
    return F.normalize(emb.mean(dim=1), dim=-1).cpu()


def zero_shot_teacher(model_name: str,
                      pretrained: Optional[str],
                      class_names: Sequence[str],
                      templates: str = 'default',
                      model_kwargs: Optional[dict] = None,
                      cache_dir: Optional[str] = None,
                      input_norm: str = 'imagenet',
                      device: str = 'cpu') -> Tuple[nn.Module, Tensor]:
    """The two sides of the zero-shot probe from one open_clip model: the
    DTM teacher (:class:`CLIPTargetGenerator`, projected, float32) and the
    (C, D) class embeddings of ``class_names`` under ``templates``
    (:func:`prompt_templates`). The text side is built first: it fails
    fast on weights without a text tower.

    Raises:
        ValueError: the image tower has no projection into the joint
            space (its tokens cannot be classified zero-shot).
    """
    import open_clip
    kwargs = dict(model_kwargs or {})
    text_model = load_text_model(model_name, pretrained, kwargs,
                                 cache_dir).to(device)
    tokenizer = open_clip.get_tokenizer(
        model_name,
        context_length=getattr(text_model, 'context_length', None))
    text = text_embeddings(text_model, tokenizer, class_names,
                           prompt_templates(templates))
    del text_model
    teacher = CLIPTargetGenerator(
        model_name, pretrained=pretrained, cache_dir=cache_dir,
        model_cfg=kwargs, projected=True, input_norm=input_norm,
        autocast_dtype='fp32').to(device)
    if not teacher.in_joint_space or teacher.out_dim != text.shape[1]:
        raise ValueError(
            f'{model_name!r}: the image tower has no projection into the '
            f'{text.shape[1]}-d joint space, so its tokens cannot be '
            f'classified zero-shot')
    return teacher, text


def classify_tokens(tokens: Tensor, text: Tensor) -> Tensor:
    """Zero-shot class of every token.

    Args:
        tokens: (B, N, D) projected patch tokens (joint space).
        text: (C, D) class embeddings from :func:`text_embeddings`.

    Returns:
        (B, N) int64: the class of highest cosine similarity.
    """
    if tokens.shape[-1] != text.shape[-1]:
        raise ValueError(f'tokens have {tokens.shape[-1]} channels but the '
                         f'text embeddings {text.shape[-1]}: the tokens are '
                         f'not in the joint space (projected teacher?)')
    sims = F.normalize(tokens.float(), dim=-1) @ text.float().t()
    return sims.argmax(dim=-1)
