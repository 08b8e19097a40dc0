"""A frozen open_clip vision tower that produces per-patch targets."""
import copy
from typing import Optional, Sequence, Tuple

from torch import Tensor, nn

from mmdtm.registry import MODELS
# CLIP_MEAN ... INPUT_NORMS: re-exported, importers use this module's names
from .frozen_teacher import AUTOCAST_DTYPES, CLIP_MEAN, CLIP_STD  # noqa: F401
from .frozen_teacher import INPUT_NORMS  # noqa: F401
from .frozen_teacher import (IMAGENET_MEAN, IMAGENET_STD, FrozenTeacher,
                             check_tag_agrees, explain_download,
                             looks_like_path)
from .vit_trunk import (refuse_non_vit, timm_patch_tokens, trunk_input_size,
                        trunk_patch_size)

HOW_TO_GET = ('Get the weights on a machine that is online, e.g. '
              "`open_clip.create_model('ViT-B-16-quickgelu', "
              "pretrained='openai', cache_dir='DIR')`, copy the downloaded "
              "file (DIR/.../open_clip_pytorch_model.bin or "
              "open_clip_model.safetensors) here and set "
              "`pretrained='/path/to/that/file'` (model_name={name!r} now). "
              "OpenAI's CLIP weights were trained with QuickGELU: use them "
              "with a '-quickgelu' model name (e.g. 'ViT-B-16-quickgelu'); a "
              "weights file does not record the activation.")


def check_open_clip_name(model_name: str) -> None:
    """Raise naming ``model_name`` when open_clip has no such model."""
    import open_clip
    if model_name not in open_clip.list_models():
        raise ValueError(f'model_name={model_name!r} is not an open_clip '
                         f'model; see open_clip.list_models()')


def create_open_clip(model_name: str, pretrained: Optional[str],
                     cache_dir: Optional[str] = None, **kwargs) -> nn.Module:
    """``open_clip.create_model`` with the weights of tag ``pretrained``
    (downloaded when online; offline, an error saying how to get them), or
    random weights for ``None`` and for a file path (which the caller loads
    with its own checks)."""
    import open_clip
    if pretrained is None or looks_like_path(pretrained):
        return open_clip.create_model(model_name, pretrained=None, **kwargs)
    with explain_download(f'CLIP weights pretrained={pretrained!r} for '
                          f'{model_name!r}',
                          HOW_TO_GET.format(name=model_name)):
        return open_clip.create_model(
            model_name, pretrained=pretrained, cache_dir=cache_dir,
            require_pretrained=True, **kwargs)


def _tower_kind(visual: nn.Module, model_name: str) -> str:
    """``'native'`` (open_clip's own ViT) or ``'timm'`` (a timm ViT trunk);
    raise for the towers that give no patch tokens (an attentional pooler,
    or a strided feature map: :func:`refuse_non_vit`)."""
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import VisionTransformer
    if isinstance(visual, VisionTransformer):
        if visual.attn_pool is not None:
            raise ValueError(
                f'{model_name!r} has no ViT image tower with patch tokens: '
                f'its tower ends in an attentional pooler (CoCa), whose '
                f'tokens are learned queries, not image patches')
        return 'native'
    is_timm = isinstance(visual, TimmModel)
    refuse_non_vit(visual.trunk if is_timm else visual,
                   f'the image tower of {model_name!r}')
    return 'timm'


def _timm_tower_projection(visual: nn.Module) -> Tuple[list, int]:
    """The token-wise maps from a timm tower's width to the shared
    embedding space, and the resulting dimension.

    The trunk's own ``head`` when it is a ``Linear`` (EVA02-CLIP, PE-Core)
    and open_clip's ``linear``/``mlp`` projection; attention pools (SigLIP's
    MAP head) act on the pooled token only and are left out.
    """
    maps, dim = [], visual.trunk.num_features
    head = visual.trunk.get_classifier()
    if isinstance(head, nn.Linear):
        maps.append(head)
        dim = head.out_features
    if len(visual.head):
        maps.append(visual.head)
        dim = [m for m in visual.head.modules()
               if isinstance(m, nn.Linear)][-1].out_features
    return maps, dim


@MODELS.register_module()
class CLIPTargetGenerator(FrozenTeacher, library='open_clip',
                          how_to_get=HOW_TO_GET):
    """Frozen open_clip image tower giving the per-patch targets (B, N, D).

    Any open_clip ViT tower, native or timm-based. The target is the last
    block's patch tokens after the tower's last norm, prefix (class,
    register) tokens dropped, and with ``projected=True`` mapped token-wise
    into the shared image-text space where the tower has such a map:

    * native ViTs (OpenAI CLIP, LAION, DataComp, MetaCLIP, CLIPA, ...):
      ``ln_post`` then ``@ visual.proj`` (768 -> 512 for ViT-B/16);
    * EVA02-CLIP / EVA-CLIP, PE-Core: the timm trunk's ``norm``, then its
      linear ``head`` (768 -> 512 for EVA02-B/16);
    * SigLIP / SigLIP 2: the trunk's ``norm`` only (768 for B/16): their
      attention-pool (MAP) head acts on the pooled token, there is no
      token-wise projection, so ``projected`` changes nothing;
    * timm ViT towers with open_clip's ``linear``/``mlp`` projection
      (ViTamin-style configs): that projection, token-wise.

    Refused with a message: ResNet (``RN50``...), ConvNeXt, Swin, FastViT
    (MobileCLIP-S) towers, which give a strided feature map rather than one
    token per patch, and CoCa's attention-pooled tower.

    The frozen-for-real guarantees, ``input_norm``, ``autocast_dtype``,
    ``inference_mode``, ``random_init_seed``, ``grid_match`` and
    ``out_grid``: see :class:`FrozenTeacher`.

    Args:
        model_name: open_clip model name, e.g. ``'ViT-B-16-quickgelu'``
            (OpenAI weights), ``'ViT-B-16-SigLIP2'``, ``'EVA02-B-16'``.
        pretrained: ``None`` (random weights, for tests and demos: the run
            says so), an open_clip tag such as ``'openai'`` (downloaded when
            online) or the path of a local checkpoint file (a full open_clip
            checkpoint or a visual-tower-only one).
        cache_dir: open_clip download cache.
        model_cfg: overrides of the open_clip model config (passed to
            ``open_clip.create_model`` as keyword arguments), e.g.
            ``dict(vision_cfg=dict(width=64, layers=2, ...))`` for a tiny
            teacher in tests.
        projected: map the tokens into the shared embedding space (see
            above; default) or return the normed tokens unprojected.
        input_norm: ``'imagenet'`` (reference: the student's normalised view
            as is), ``'clip'`` (OpenAI CLIP's mean/std) or ``'teacher'`` (the
            pretrained tag's own, e.g. 0.5/0.5 for SigLIP).
        output_format: ``'patch_tokens'``, the only format (kept so that
            configs of the time when ``'tokens_attention'`` was a format of
            this class fail at build time naming its own type now,
            :class:`CLIPTokensAttentionGenerator`).

    A pretrained tag is checked against the model before any download: an
    activation (QuickGELU vs GELU), image size or mean/std that disagrees
    with the tag's configuration raises, naming both settings.

    Examples:
        >>> import torch
        >>> from mmengine.logging import MMLogger
        >>> # a random teacher logs a warning; keep it out of this example
        >>> _ = MMLogger.get_instance('clip-example', log_level='ERROR')
        >>> gen = CLIPTargetGenerator('ViT-B-16-quickgelu', pretrained=None)
        >>> gen(torch.randn(2, 3, 224, 224)).shape
        torch.Size([2, 196, 512])
    """

    def __init__(self,
                 model_name: str = 'ViT-B-16-quickgelu',
                 pretrained: Optional[str] = 'openai',
                 cache_dir: Optional[str] = None,
                 model_cfg: Optional[dict] = None,
                 projected: bool = True,
                 input_norm: str = 'imagenet',
                 data_mean: Sequence[float] = IMAGENET_MEAN,
                 data_std: Sequence[float] = IMAGENET_STD,
                 autocast_dtype: Optional[str] = None,
                 inference_mode: bool = True,
                 random_init_seed: int = 0,
                 output_format: str = 'patch_tokens',
                 init_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        if output_format == 'tokens_attention':
            raise ValueError(
                "output_format='tokens_attention' is a type of its own now: "
                "use type='CLIPTokensAttentionGenerator' with the same "
                'arguments, without output_format')
        if output_format != 'patch_tokens':
            raise ValueError(f"output_format must be 'patch_tokens' (the "
                             f"tuple format: type='CLIPTokensAttention"
                             f"Generator'), got {output_format!r}")
        super().__init__(model_name, pretrained, input_norm=input_norm,
                         data_mean=data_mean, data_std=data_std,
                         autocast_dtype=autocast_dtype,
                         inference_mode=inference_mode,
                         random_init_seed=random_init_seed,
                         init_cfg=init_cfg, **kwargs)
        self.projected, self.cache_dir = projected, cache_dir
        self.model_cfg = dict(model_cfg or {})
        self._build_teacher()
        if self.kind == 'native':
            self.teacher.output_tokens = True
            self._maps, self._dim = [], None
        else:
            self._maps, self._dim = _timm_tower_projection(self.teacher)

    def _check_model_name(self, model_name: str) -> None:
        check_open_clip_name(model_name)

    def _check_tag(self) -> Optional[dict]:
        """Compare the tag's configuration with the model to be built;
        raise naming both settings (no download happens before)."""
        import open_clip
        from open_clip.model import CLIPVisionCfg
        cfg = open_clip.get_pretrained_cfg(self.model_name, self.tag)
        if not cfg:
            return None  # not a tag: create_model says so, with the list
        base = copy.deepcopy(open_clip.get_model_config(self.model_name))
        built = dict(base, **self.model_cfg)
        vision = dict(built.get('vision_cfg', {}))
        if built.get('force_quick_gelu'):  # create_model's own overrides
            built['quick_gelu'] = True
        if built.get('force_image_size') is not None:
            vision['image_size'] = built['force_image_size']
        source = f'open_clip {self.model_name!r} pretrained={self.tag!r}'
        timm_tower = bool(vision.get('timm_model_name'))
        tag_gelu = 'QuickGELU' if cfg.get('quick_gelu') else 'GELU'
        built_gelu = ('QuickGELU' if built.get('quick_gelu') and not
                      timm_tower else 'GELU')
        other = (f'{self.model_name}-quickgelu' if tag_gelu == 'QuickGELU'
                 else self.model_name.replace('-quickgelu', ''))
        check_tag_agrees(
            source, 'activation', tag_gelu, built_gelu,
            f'use model_name={other!r} (and no quick_gelu in model_cfg)')
        default = CLIPVisionCfg.image_size
        size = base['vision_cfg'].get('image_size', default)
        check_tag_agrees(
            source, 'image_size', size, vision.get('image_size', default),
            'drop the image_size override (or pick the model name built '
            "for that size); to feed the teacher another size use "
            "grid_match='resize_input'")
        self._check_tag_norm(source, (cfg['mean'], cfg['std']))
        return cfg

    def _create(self) -> nn.Module:
        return create_open_clip(self.model_name, self.pretrained,
                                self.cache_dir, **self.model_cfg)

    def _read_state(self, model: nn.Module, path: str) -> dict:
        """open_clip's reading (``state_dict`` / ``module.`` wrappers,
        TorchScript, safetensors); big_vision ``.npz`` arrays (SigLIP) are
        converted into ``model`` by open_clip and read back from it."""
        import open_clip
        if path.endswith(('.npz', '.npy')):
            from open_clip.convert import load_big_vision_weights
            load_big_vision_weights(model, path)
            return model.state_dict()
        return open_clip.factory.load_state_dict(path)

    def _fit_state(self, model: nn.Module,
                   state: dict) -> Tuple[nn.Module, dict, Sequence[str]]:
        """The image tower's part of a full open_clip checkpoint (third-party
        formats converted, the position embedding resized to the model's
        grid by open_clip), or a visual-tower-only file as it is."""
        from open_clip.convert import convert_state_dict
        from open_clip.model import resize_pos_embed
        state = convert_state_dict(model, state)
        if any(k.startswith('visual.') for k in state):
            resize_pos_embed(state, model)
            state = {k[len('visual.'):]: v for k, v in state.items()
                     if k.startswith('visual.')}
        return model.visual, state, ()

    def _tower(self, model: nn.Module) -> nn.Module:
        self.kind = _tower_kind(model.visual, self.model_name)
        return model.visual

    @property
    def patch_size(self) -> Tuple[int, int]:
        if self.kind == 'timm':
            return trunk_patch_size(self.teacher.trunk)
        return tuple(self.teacher.patch_size)

    @property
    def input_size(self) -> Tuple[int, int]:
        if self.kind == 'timm':
            return trunk_input_size(self.teacher.trunk)
        return tuple(self.teacher.image_size)

    @property
    def out_dim(self) -> int:
        """D: the target dimension."""
        if self.kind == 'timm':
            return self._dim if self.projected else \
                self.teacher.trunk.num_features
        proj = getattr(self.teacher, 'proj', None)
        if self.projected and proj is not None:
            return proj.shape[1]
        return self.teacher.ln_post.normalized_shape[0]

    @property
    def in_joint_space(self) -> bool:
        """Whether the targets are mapped into the shared image-text space
        (a token-wise projection applied: not for SigLIP, whose patch
        tokens never pass its pooling head)."""
        if not self.projected:
            return False
        if self.kind == 'native':
            return self.teacher.proj is not None
        return bool(self._maps)

    def _tag_norms(self):
        import open_clip
        return [(tuple(c['mean']), tuple(c['std'])) for c in (
            open_clip.get_pretrained_cfg(self.model_name, t)
            for t in open_clip.list_pretrained_tags_by_model(
                self.model_name))]

    def _set_input_size(self, size: Tuple[int, int]) -> None:
        visual = self.teacher
        if hasattr(visual, 'set_input_size'):  # timm towers
            visual.set_input_size(size)
            return
        from timm.layers import resample_abs_pos_embed
        patch = tuple(visual.patch_size)
        new_grid = (size[0] // patch[0], size[1] // patch[1])
        pos = resample_abs_pos_embed(
            visual.positional_embedding.data.unsqueeze(0), new_size=new_grid,
            old_size=tuple(visual.grid_size), num_prefix_tokens=1)
        visual.positional_embedding = nn.Parameter(pos.squeeze(0))
        visual.grid_size, visual.image_size = new_grid, tuple(size)

    def _patch_tokens(self, x: Tensor) -> Tensor:
        if self.kind == 'timm':
            tokens = timm_patch_tokens(self.teacher.trunk, x)
            if self.projected:
                for layer in self._maps:
                    tokens = layer(tokens)
            return tokens
        out = self.teacher.forward_intermediates(
            x, indices=1, normalize_intermediates=True,
            intermediates_only=True, output_fmt='NLC')
        tokens = out['image_intermediates'][-1]  # (B, N, width), ln_post
        if self.projected and self.teacher.proj is not None:
            tokens = tokens @ self.teacher.proj
        return tokens

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, projected={self.projected}'
