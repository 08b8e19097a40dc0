"""A frozen plain timm ViT (DINOv2, MAE, DeiT III, ...) as the teacher, and
the patch-token extraction shared with open_clip's timm towers."""
import sys
from typing import Optional, Sequence, Tuple

from mmengine.logging import print_log
from torch import Tensor, nn

from mmdtm.registry import MODELS
from .frozen_teacher import (IMAGENET_MEAN, IMAGENET_STD, FrozenTeacher,
                             check_tag_agrees, grid_str, looks_like_path,
                             read_weights)

TIMM_HOW_TO_GET = (
    'Get the weights on a machine that is online, e.g. '
    "`timm.create_model('{name}', pretrained=True, num_classes=0)` and "
    '`torch.save(model.state_dict(), FILE)` (or copy the model.safetensors '
    'file from its Hugging Face hub folder), then set '
    "`pretrained='/path/to/FILE'`.")


def is_timm_vit(trunk: nn.Module) -> bool:
    """Whether a timm model gives a token sequence with a patch grid (the
    ViT family: ViT, EVA/EVA02, DeiT III, SigLIP, DINOv2, ...)."""
    grid = getattr(getattr(trunk, 'patch_embed', None), 'grid_size', None)
    return (getattr(trunk, 'num_prefix_tokens', None) is not None
            and grid is not None and hasattr(trunk, 'forward_features'))


def refuse_non_vit(trunk: nn.Module, what: str) -> None:
    """Raise for towers that give a strided feature map (ConvNeXt, ResNet,
    Swin, FastViT, open_clip's modified ResNet, ...) instead of ViT patch
    tokens."""
    if not is_timm_vit(trunk):
        raise ValueError(
            f'{what} ({type(trunk).__name__}) is not a ViT: it gives a '
            f'strided feature map, not one token per image patch, so its '
            f'targets would not line up with the student patches. Use a '
            f'ViT-family teacher (ViT, SigLIP, EVA02, DINOv2, ...)')


def trunk_patch_size(trunk: nn.Module) -> Tuple[int, int]:
    """The input pixels per token: the patch size, or the stride of a
    hybrid stem (ViTamin, MobileCLIP-B embed 1x1 patches of a feature
    map)."""
    grid = trunk.patch_embed.grid_size
    size = trunk_input_size(trunk)
    return size[0] // grid[0], size[1] // grid[1]


def trunk_input_size(trunk: nn.Module) -> Tuple[int, int]:
    size = trunk.patch_embed.img_size
    return (size, size) if isinstance(size, int) else tuple(size)


def timm_patch_tokens(trunk: nn.Module, x: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, N, C): a timm ViT's final patch tokens after its
    last norm, prefix (class, register, distillation) tokens dropped.

    ``forward_features`` ends with the model's ``norm``; models that pool
    first and normalise the pooled feature (``fc_norm``, e.g. MAE-style
    average pooling) get that ``fc_norm`` applied to every token instead.
    """
    feats = trunk.forward_features(x)
    if feats.dim() != 3:
        raise ValueError(f'{type(trunk).__name__}.forward_features gave '
                         f'shape {tuple(feats.shape)}, not (B, L, C)')
    tokens = feats[:, trunk.num_prefix_tokens:]
    fc_norm = getattr(trunk, 'fc_norm', None)
    if (isinstance(getattr(trunk, 'norm', None), nn.Identity)
            and fc_norm is not None and not isinstance(fc_norm, nn.Identity)):
        tokens = fc_norm(tokens)
    return tokens


def _load_file(model: nn.Module, path: str, name: str) -> None:
    """Load a local timm checkpoint strictly (the head aside), converted by
    the model's own ``checkpoint_filter_fn`` (original formats, position
    embedding resampling)."""
    import timm
    state = read_weights(path, timm.models.load_state_dict, 'timm teacher',
                         TIMM_HOW_TO_GET.format(name=name))
    filter_fn = getattr(sys.modules[type(model).__module__],
                        'checkpoint_filter_fn', None)
    try:
        if filter_fn is not None:
            state = filter_fn(state, model)
        result = model.load_state_dict(state, strict=False)
    except Exception as err:  # shape mismatches, unconvertible keys
        raise RuntimeError(f'timm teacher weights {path!r} do not fit timm '
                           f'model {name!r}: {err}') from err
    head = model.pretrained_cfg.get('classifier', 'head')
    heads = head if isinstance(head, (list, tuple)) else [head]
    unexpected = [k for k in result.unexpected_keys
                  if not any(k.startswith(f'{h}.') for h in heads)]
    if result.missing_keys or unexpected:
        raise RuntimeError(
            f'timm teacher weights {path!r} do not fit timm model {name!r}: '
            f'missing keys {result.missing_keys}, unexpected keys '
            f'{unexpected}')


@MODELS.register_module()
class TimmTargetGenerator(FrozenTeacher):
    """A frozen plain timm ViT giving the per-patch targets (B, N, D).

    The target is the final patch tokens after the model's last norm, prefix
    (class / register) tokens dropped; no classifier head (built with
    ``num_classes=0``). Same frozen-for-real guarantees and options as
    :class:`CLIPTargetGenerator` (see :class:`FrozenTeacher`).

    Args:
        model_name: a timm architecture, e.g. ``'vit_base_patch14_dinov2'``.
        pretrained: ``None`` (random weights, for tests: the run says so), a
            timm pretrained tag of that architecture (e.g. ``'lvd142m'``;
            downloaded when online) or a local weights file (timm or the
            original format the model's ``checkpoint_filter_fn`` converts).
        model_kwargs: extra ``timm.create_model`` arguments, e.g.
            ``dict(img_size=224)`` or a tiny ``depth``/``embed_dim`` in tests.
        cache_dir: timm download cache.
        **kwargs: ``input_norm`` (``'teacher'`` = the tag's mean/std),
            ``data_mean``, ``data_std``, ``teacher_mean``, ``teacher_std``,
            ``autocast_dtype``, ``inference_mode``, ``random_init_seed``,
            ``grid_match``, ``out_grid``: see :class:`FrozenTeacher`.

    A pretrained tag is checked before any download: an ``img_size`` or a
    mean/std (``input_norm='clip'``, ``teacher_mean``/``teacher_std``) that
    disagrees with the tag's configuration raises, naming both.

    Examples:
        >>> gen = TimmTargetGenerator(
        ...     'vit_base_patch14_dinov2', pretrained=None,
        ...     grid_match='resize_input', out_grid=(14, 14))
        >>> gen(torch.randn(2, 3, 224, 224)).shape
        torch.Size([2, 196, 768])
    """

    def __init__(self,
                 model_name: str = 'vit_base_patch14_dinov2',
                 pretrained: Optional[str] = None,
                 model_kwargs: Optional[dict] = None,
                 cache_dir: Optional[str] = None,
                 input_norm: str = 'imagenet',
                 data_mean: Sequence[float] = IMAGENET_MEAN,
                 data_std: Sequence[float] = IMAGENET_STD,
                 **kwargs) -> None:
        super().__init__(input_norm=input_norm, data_mean=data_mean,
                         data_std=data_std, **kwargs)
        import timm
        if model_name not in timm.list_models():
            arch, _, tag = model_name.partition('.')
            hint = (f"; give the tag apart: model_name={arch!r}, "
                    f'pretrained={tag!r}' if tag else '')
            raise ValueError(f'model_name={model_name!r} is not a timm '
                             f'architecture (see timm.list_models()){hint}')
        self.model_name, self.pretrained = model_name, pretrained
        self.model_kwargs = dict(model_kwargs or {})
        self.cache_dir = cache_dir
        self.tag = (pretrained if pretrained is not None
                    and not looks_like_path(pretrained) else None)
        self.tag_cfg = self._check_tag() if self.tag else None
        self._freeze(self._build)
        refuse_non_vit(self.teacher, f'timm model {model_name!r}')

    def _check_tag(self) -> dict:
        import timm
        name = f'{self.model_name}.{self.tag}'
        tags = timm.list_pretrained(f'{self.model_name}.*')
        if name not in tags:
            known = [t.split('.', 1)[1] for t in tags]
            raise ValueError(
                f'pretrained={self.tag!r} is not a timm tag of '
                f'{self.model_name!r}; known: {known}, or give a local '
                f'weights file')
        cfg = timm.models.get_pretrained_cfg(name).to_dict()
        source = f'timm {name}'
        if 'img_size' in self.model_kwargs:
            tag_size = tuple(cfg['input_size'][-2:])
            built = self.model_kwargs['img_size']
            built = (built, built) if isinstance(built, int) else tuple(built)
            check_tag_agrees(
                source, 'input size', grid_str(tag_size), grid_str(built),
                "drop model_kwargs.img_size, or keep the tag's size and use "
                "grid_match='resize_input' / 'resample_tokens'")
        self._check_tag_norm(source, (cfg['mean'], cfg['std']))
        return cfg

    def _build(self) -> nn.Module:
        import timm
        name = self.model_name
        kwargs = dict(self.model_kwargs, num_classes=0)
        if self.pretrained is None:
            print_log(
                f'TimmTargetGenerator: the {name} teacher is RANDOMLY '
                f'INITIALISED (pretrained=None); its targets carry no '
                f'pretrained knowledge.', logger='current', level=30)
            return timm.create_model(name, pretrained=False, **kwargs)
        if self.tag is None:
            model = timm.create_model(name, pretrained=False, **kwargs)
            _load_file(model, self.pretrained, name)
            print_log(f'TimmTargetGenerator: loaded {name} weights from '
                      f'{self.pretrained}', logger='current')
            return model
        full = f'{name}.{self.tag}'
        try:
            return timm.create_model(full, pretrained=True,
                                     cache_dir=self.cache_dir, **kwargs)
        except Exception as err:
            raise RuntimeError(
                f'could not obtain timm weights {full!r} '
                f'({type(err).__name__}: {err}). Offline? ' +
                TIMM_HOW_TO_GET.format(name=full)) from err

    @property
    def patch_size(self) -> Tuple[int, int]:
        return trunk_patch_size(self.teacher)

    @property
    def input_size(self) -> Tuple[int, int]:
        return trunk_input_size(self.teacher)

    @property
    def out_dim(self) -> int:
        return self.teacher.num_features

    def _tag_norms(self):
        import timm
        return [(tuple(c.mean), tuple(c.std)) for c in (
            timm.models.get_pretrained_cfg(t)
            for t in timm.list_pretrained(f'{self.model_name}.*'))]

    def _set_input_size(self, size: Tuple[int, int]) -> None:
        if not hasattr(self.teacher, 'set_input_size'):
            raise ValueError(
                f"grid_match='resize_input': timm model "
                f'{self.model_name!r} cannot change its input size; use '
                f"grid_match='resample_tokens'")
        self.teacher.set_input_size(img_size=size)

    def _patch_tokens(self, x: Tensor) -> Tensor:
        return timm_patch_tokens(self.teacher, x)

    def extra_repr(self) -> str:
        return (f'model_name={self.model_name!r}, pretrained='
                f'{self.pretrained!r}, input_norm={self.input_norm!r}, '
                f'out_dim={self.out_dim}, grid={grid_str(self.grid)}')

