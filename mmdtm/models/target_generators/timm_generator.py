"""A frozen plain timm ViT (DINOv2, MAE, DeiT III, ...) as the teacher."""
import re
import sys
from typing import Optional, Sequence, Tuple

from torch import Tensor, nn

from mmdtm.registry import MODELS
from .frozen_teacher import (IMAGENET_MEAN, IMAGENET_STD, FrozenTeacher,
                             check_tag_agrees, explain_download, grid_str)
from .vit_trunk import (refuse_non_vit, timm_patch_tokens, trunk_input_size,
                        trunk_patch_size)

TIMM_HOW_TO_GET = (
    'Get the weights on a machine that is online, e.g. '
    "`timm.create_model('{name}', pretrained=True, num_classes=0)` and "
    '`torch.save(model.state_dict(), FILE)` (or copy the model.safetensors '
    'file from its Hugging Face hub folder), then set '
    "`pretrained='/path/to/FILE'`.")


@MODELS.register_module()
class TimmTargetGenerator(FrozenTeacher, library='timm',
                          how_to_get=TIMM_HOW_TO_GET):
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
        >>> import torch
        >>> from mmengine.logging import MMLogger
        >>> # a random teacher logs a warning; keep it out of this example
        >>> _ = MMLogger.get_instance('timm-example', log_level='ERROR')
        >>> gen = TimmTargetGenerator(
        ...     'vit_small_patch14_dinov2', pretrained=None,
        ...     grid_match='resize_input', out_grid=(14, 14))
        >>> gen(torch.randn(2, 3, 224, 224)).shape
        torch.Size([2, 196, 384])
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
        super().__init__(model_name, pretrained, input_norm=input_norm,
                         data_mean=data_mean, data_std=data_std, **kwargs)
        self.model_kwargs = dict(model_kwargs or {})
        self.cache_dir = cache_dir
        self._build_teacher()

    def _check_model_name(self, model_name: str) -> None:
        import timm
        if model_name not in timm.list_models():
            arch, _, tag = model_name.partition('.')
            hint = (f"; give the tag apart: model_name={arch!r}, "
                    f'pretrained={tag!r}' if tag else '')
            raise ValueError(f'model_name={model_name!r} is not a timm '
                             f'architecture (see timm.list_models()){hint}')

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

    def _create(self) -> nn.Module:
        import timm
        kwargs = dict(self.model_kwargs, num_classes=0)
        if self.tag is None:
            return timm.create_model(self.model_name, pretrained=False,
                                     **kwargs)
        full = f'{self.model_name}.{self.tag}'
        with explain_download(f'timm weights {full!r}',
                              self.how_to_get.format(name=full)):
            return timm.create_model(full, pretrained=True,
                                     cache_dir=self.cache_dir, **kwargs)

    def _read_state(self, model: nn.Module, path: str) -> dict:
        import timm
        return timm.models.load_state_dict(path)

    def _fit_state(self, model: nn.Module,
                   state: dict) -> Tuple[nn.Module, dict, Sequence[str]]:
        """Converted by the model's own ``checkpoint_filter_fn`` (original
        formats, position embedding resampling); the classifier head of
        the file (the teacher has none) is left unused."""
        filter_fn = getattr(sys.modules[type(model).__module__],
                            'checkpoint_filter_fn', None)
        if filter_fn is not None:
            state = filter_fn(state, model)
        head = model.pretrained_cfg.get('classifier', 'head')
        heads = head if isinstance(head, (list, tuple)) else [head]
        return model, state, [re.escape(f'{h}.') for h in heads]

    def _tower(self, model: nn.Module) -> nn.Module:
        refuse_non_vit(model, f'timm model {self.model_name!r}')
        return model

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


