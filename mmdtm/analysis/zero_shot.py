"""Zero-shot classification of CLIP patch tokens against class prompts.

The DTM teacher's target for a patch is ``ln_post(token) @ visual.proj``:
the very map CLIP applies to its class token to get the image embedding, so
the projected patch tokens live in CLIP's joint image-text space and can be
compared with text embeddings by cosine similarity, exactly as CLIP
classifies whole images zero-shot.
"""
import os.path as osp
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmdtm.models.target_generators.clip_generator import (
    HOW_TO_GET, _looks_like_path)

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
            file holds no (or an incomplete) text tower, e.g. a
            visual-tower-only file.
    """
    import open_clip
    kwargs = dict(model_kwargs or {})
    if model_name not in open_clip.list_models():
        raise ValueError(f'model_name={model_name!r} is not an open_clip '
                         f'model; see open_clip.list_models()')
    if pretrained is None or _looks_like_path(pretrained):
        model = open_clip.create_model(model_name, pretrained=None, **kwargs)
    else:
        try:
            model = open_clip.create_model(
                model_name, pretrained=pretrained, cache_dir=cache_dir,
                require_pretrained=True, **kwargs)
        except Exception as err:
            raise RuntimeError(
                f'could not obtain CLIP weights pretrained={pretrained!r} for '
                f'{model_name!r} ({type(err).__name__}: {err}). Offline? ' +
                HOW_TO_GET.format(model=model_name)) from err
    if not callable(getattr(model, 'encode_text', None)):
        raise NoTextTowerError(f'open_clip model {model_name!r} has no text '
                               f'tower (no encode_text)')
    if pretrained is not None and _looks_like_path(pretrained):
        _load_text_weights(model, pretrained)
    model.visual = None  # the image side is the DTM teacher
    return model.eval().requires_grad_(False)


def _load_text_weights(model: nn.Module, path: str) -> None:
    import open_clip
    if not osp.isfile(path):
        raise FileNotFoundError(f'CLIP weights not found: {path!r} is not a '
                                f'file')
    try:
        state = open_clip.factory.load_state_dict(path)
    except Exception as err:
        raise RuntimeError(
            f'CLIP weights {path!r} are not a readable checkpoint '
            f'({type(err).__name__}: {err})') from err
    text_keys = [k for k in model.state_dict() if not k.startswith('visual.')]
    missing = [k for k in text_keys if k not in state]
    if len(missing) == len(text_keys):
        raise NoTextTowerError(
            f'{path!r} holds no text tower (none of its {len(state)} keys '
            f'belongs to it, e.g. {missing[:3]}); a visual-tower-only file '
            f'can be a DTM teacher but cannot classify zero-shot: give a '
            f'full open_clip checkpoint')
    if missing:
        raise NoTextTowerError(
            f'{path!r}: the text tower is incomplete, {len(missing)} keys '
            f'missing, e.g. {missing[:5]}')
    text_state = {k: state[k] for k in text_keys}
    try:
        model.load_state_dict(text_state, strict=False)
    except RuntimeError as err:
        raise RuntimeError(f'the text tower in {path!r} does not fit '
                           f'{type(model).__name__}: {err}') from err


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
