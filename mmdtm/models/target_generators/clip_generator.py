"""A frozen open_clip vision tower that produces per-patch targets."""
import contextlib
import os
import os.path as osp
from typing import Optional, Sequence, Tuple, Union

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmdtm.registry import MODELS

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
INPUT_NORMS = ('imagenet', 'clip')
OUTPUT_FORMATS = ('patch_tokens', 'tokens_attention')
AUTOCAST_DTYPES = {None: None, 'fp32': torch.float32, 'bf16': torch.bfloat16,
                   'fp16': torch.float16}
_WEIGHT_SUFFIXES = ('.pt', '.pth', '.bin', '.safetensors', '.ckpt', '.npz')

HOW_TO_GET = ('Get the weights on a machine that is online, e.g. '
              "`open_clip.create_model('ViT-B-16-quickgelu', "
              "pretrained='openai', cache_dir='DIR')`, copy the downloaded "
              "file (DIR/.../open_clip_pytorch_model.bin or "
              "open_clip_model.safetensors) here and set "
              "`pretrained='/path/to/that/file'` (model_name={model!r} now). "
              "OpenAI's CLIP weights were trained with QuickGELU: use them "
              "with a '-quickgelu' model name (e.g. 'ViT-B-16-quickgelu'); a "
              "weights file does not record the activation.")


def _looks_like_path(pretrained: str) -> bool:
    return (os.sep in pretrained or pretrained.startswith('.')
            or pretrained.endswith(_WEIGHT_SUFFIXES) or osp.exists(pretrained))


def _load_visual_weights(model: nn.Module, path: str, model_name: str) -> None:
    """Load a full open_clip checkpoint, or a visual-only one, strictly."""
    import open_clip
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'CLIP teacher weights not found: pretrained={path!r} is not a '
            f'file. ' + HOW_TO_GET.format(model=model_name))
    try:
        open_clip.load_checkpoint(model, path, strict=True)
        return
    except Exception as full_err:  # maybe a visual-tower-only file
        try:
            state = open_clip.factory.load_state_dict(path)
        except Exception as err:
            raise RuntimeError(
                f'CLIP teacher weights {path!r} are not a readable '
                f'checkpoint ({type(err).__name__}: {err}). ' +
                HOW_TO_GET.format(model=model_name)) from err
        visual = {k[len('visual.'):]: v for k, v in state.items()
                  if k.startswith('visual.')} or state
        try:
            result = model.visual.load_state_dict(visual, strict=False)
            problem = (f'missing keys {result.missing_keys}, unexpected keys '
                       f'{result.unexpected_keys}'
                       if result.missing_keys or result.unexpected_keys else
                       None)
        except RuntimeError as err:  # shape mismatches
            problem = str(err)
        if problem:
            raise RuntimeError(
                f'CLIP teacher weights {path!r} do not fit open_clip model '
                f'{model_name!r} (as a full CLIP checkpoint: {full_err}; as '
                f'a visual tower: {problem})') from full_err


@MODELS.register_module()
class CLIPTargetGenerator(BaseModule):
    """Frozen CLIP image tower giving the per-patch targets (B, N, D).

    The target is the last block's patch tokens after CLIP's ``ln_post``,
    multiplied by the visual projection (768 -> 512 for ViT-B/16), with the
    class token dropped.

    Frozen for real: every parameter has ``requires_grad=False``; the tower
    is held outside ``_modules``, so it is in no ``state_dict()`` (no
    checkpoint carries it), in no ``parameters()`` (no optimizer sees it, no
    ``find_unused_parameters`` is needed) and ``train()`` never reaches it;
    ``.to()`` / ``.cuda()`` still move it. It runs under no-grad or
    inference mode, optionally under autocast.

    Args:
        model_name: open_clip model name, e.g. ``'ViT-B-16'``.
        pretrained: ``None`` (random weights, for tests and demos: the run
            says so), an open_clip tag such as ``'openai'`` (downloaded when
            online) or the path of a local checkpoint file (a full open_clip
            checkpoint or a visual-tower-only one).
        cache_dir: open_clip download cache.
        model_cfg: overrides of the open_clip model config (passed to
            ``open_clip.create_model`` as keyword arguments), e.g.
            ``dict(vision_cfg=dict(width=64, layers=2, ...))`` for a tiny
            teacher in tests.
        projected: multiply by ``visual.proj`` (default) or return the
            ``ln_post`` tokens unprojected.
        input_norm: ``'imagenet'`` (reference: the student's normalised view
            as is) or ``'clip'`` (undo ``data_mean``/``data_std`` and
            normalise with CLIP's own mean and std).
        data_mean / data_std: the data preprocessor's normalisation (0-255
            scale), used by ``input_norm='clip'``.
        autocast_dtype: ``None`` (inherit the surrounding autocast, e.g. the
            AMP optimizer wrapper's), ``'fp32'`` (autocast off), ``'bf16'``
            or ``'fp16'``.
        inference_mode: use ``torch.inference_mode`` (the output is cloned so
            that it can be used in autograd); otherwise ``torch.no_grad``.
        random_init_seed: seed of the random weights when
            ``pretrained=None``, so that every process (and a resumed run)
            gets the same teacher; the global RNG is left untouched.
        output_format: ``'patch_tokens'`` (default): the (B, N, D) patch
            targets. ``'tokens_attention'``: the tuple that MMPretrain's own
            ``CLIPGenerator`` returns and that its ``EVA`` and ``MILAN``
            algorithms unpack, so that this teacher drops into their configs
            without a new algorithm class: ((B, 1 + N, D) tokens with the
            class token first, (B, 1 + N, 1 + N) last-block attention
            averaged over heads). EVA drops the class token itself; MILAN
            masks by the class token's attention row. Needs a tower whose
            ``ln_post`` sees every token and whose last block uses
            ``nn.MultiheadAttention`` (every plain open_clip ViT).

    Examples:
        >>> gen = CLIPTargetGenerator('ViT-B-16', pretrained=None)
        >>> gen(torch.randn(2, 3, 224, 224)).shape
        torch.Size([2, 196, 512])
    """

    def __init__(self,
                 model_name: str = 'ViT-B-16',
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
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if input_norm not in INPUT_NORMS:
            raise ValueError(f'input_norm must be one of {INPUT_NORMS}, got '
                             f'{input_norm!r}')
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(f'output_format must be one of {OUTPUT_FORMATS},'
                             f' got {output_format!r}')
        if autocast_dtype not in AUTOCAST_DTYPES:
            raise ValueError(f'autocast_dtype must be one of '
                             f'{list(AUTOCAST_DTYPES)}, got {autocast_dtype!r}')
        self.model_name, self.pretrained = model_name, pretrained
        self.projected, self.input_norm = projected, input_norm
        self.autocast_dtype = AUTOCAST_DTYPES[autocast_dtype]
        self.inference_mode = inference_mode
        self.output_format = output_format
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(random_init_seed)
            visual = self._build_visual(model_name, pretrained, cache_dir,
                                        dict(model_cfg or {}))
        visual.requires_grad_(False)
        visual.eval()
        if output_format == 'tokens_attention':
            self._check_attention_tower(visual, model_name)
        # Outside _modules on purpose: see the class docstring.
        self.__dict__['teacher'] = visual

        mean, std = torch.tensor(data_mean), torch.tensor(data_std)
        clip_mean, clip_std = torch.tensor(CLIP_MEAN), torch.tensor(CLIP_STD)
        # x_clip = x * scale + shift, from the student's normalised view.
        scale = std / 255.0 / clip_std
        shift = (mean / 255.0 - clip_mean) / clip_std
        self.register_buffer('renorm_scale', scale.view(1, 3, 1, 1), False)
        self.register_buffer('renorm_shift', shift.view(1, 3, 1, 1), False)

    @staticmethod
    def _build_visual(model_name: str, pretrained: Optional[str],
                      cache_dir: Optional[str], model_cfg: dict) -> nn.Module:
        import open_clip
        if model_name not in open_clip.list_models():
            raise ValueError(f'model_name={model_name!r} is not an open_clip '
                             f'model; see open_clip.list_models()')
        if pretrained is None:
            print_log(
                f'CLIPTargetGenerator: the {model_name} teacher is RANDOMLY '
                f'INITIALISED (pretrained=None); its targets carry no CLIP '
                f'knowledge. Set pretrained to a tag or a weights file for '
                f'real training.', logger='current', level=30)
            model = open_clip.create_model(model_name, pretrained=None,
                                           **model_cfg)
        elif _looks_like_path(pretrained):
            model = open_clip.create_model(model_name, pretrained=None,
                                           **model_cfg)
            _load_visual_weights(model, pretrained, model_name)
            print_log(f'CLIPTargetGenerator: loaded {model_name} weights '
                      f'from {pretrained}', logger='current')
        else:
            try:
                model = open_clip.create_model(
                    model_name, pretrained=pretrained, cache_dir=cache_dir,
                    require_pretrained=True, **model_cfg)
            except Exception as err:
                raise RuntimeError(
                    f'could not obtain CLIP weights pretrained={pretrained!r} '
                    f'for {model_name!r} ({type(err).__name__}: {err}). '
                    f'Offline? ' + HOW_TO_GET.format(model=model_name)
                ) from err
        visual = model.visual
        if not hasattr(visual, 'output_tokens') or not hasattr(
                visual, 'ln_post'):
            raise ValueError(f'{model_name!r} has no ViT image tower with '
                             f'patch tokens; use a ViT open_clip model')
        visual.output_tokens = True
        return visual

    @staticmethod
    def _check_attention_tower(visual: nn.Module, model_name: str) -> None:
        blocks = getattr(getattr(visual, 'transformer', None), 'resblocks',
                         None)
        attn = getattr(blocks[-1], 'attn', None) if blocks else None
        if (not isinstance(attn, nn.MultiheadAttention)
                or getattr(visual, 'attn_pool', None) is not None
                or getattr(visual, 'final_ln_after_pool', False)):
            raise ValueError(
                f"output_format='tokens_attention' needs a plain open_clip "
                f'ViT (last block with nn.MultiheadAttention, ln_post on '
                f'every token, no attention pooling); {model_name!r} is not')

    @property
    def out_dim(self) -> int:
        """D: the target dimension."""
        proj = getattr(self.teacher, 'proj', None)
        if self.projected and proj is not None:
            return proj.shape[1]
        return self.teacher.ln_post.normalized_shape[0]

    @property
    def num_patches(self) -> int:
        grid = self.teacher.grid_size
        return grid[0] * grid[1]

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        self.teacher._apply(fn, *args, **kwargs)
        return self

    def train(self, mode: bool = True) -> 'CLIPTargetGenerator':
        super().train(mode)
        self.teacher.eval()  # frozen: always eval
        return self

    def init_weights(self) -> None:
        """Nothing to initialise: the teacher is loaded, never re-inited."""

    def _autocast(self, device_type: str):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        if self.autocast_dtype == torch.float32:
            return torch.autocast(device_type, enabled=False)
        return torch.autocast(device_type, dtype=self.autocast_dtype)

    def _targets(self, x: Tensor) -> Tensor:
        if self.input_norm == 'clip':
            x = x * self.renorm_scale.to(x.dtype) + self.renorm_shift.to(
                x.dtype)
        with self._autocast(x.device.type):
            _, tokens = self.teacher(x)  # (B, N, width) after ln_post
            if self.projected and self.teacher.proj is not None:
                tokens = tokens @ self.teacher.proj
        return tokens.float()

    def _tokens_attention(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """(B, 1 + N, D) tokens with the class token, (B, 1 + N, 1 + N)
        last-block attention (mean over heads), float32."""
        last = self.teacher.transformer.resblocks[-1]
        seen = {}

        def keep(name):
            return lambda module, args, out: seen.__setitem__(name, out)

        hooks = [last.ln_1.register_forward_hook(keep('attn_in')),
                 self.teacher.ln_post.register_forward_hook(keep('post'))]
        try:
            self._targets(x)  # the patch-target pass; hooks keep the rest
        finally:
            for hook in hooks:
                hook.remove()
        tokens, attn_in = seen['post'], seen['attn_in']
        if tokens.dim() != 3 or tokens.shape[1] != self.num_patches + 1:
            raise ValueError(
                f'ln_post of {self.model_name!r} saw shape '
                f'{tuple(tokens.shape)}, not (B, 1 + {self.num_patches}, C); '
                f"output_format='tokens_attention' cannot be used with it")
        with self._autocast(x.device.type):
            if self.projected and self.teacher.proj is not None:
                tokens = tokens @ self.teacher.proj
            # The attention the last block computed, now with its weights.
            _, weights = last.attn(attn_in, attn_in, attn_in,
                                   need_weights=True,
                                   average_attn_weights=True)
        return tokens.float(), weights.float()

    def _output(self, x: Tensor):
        if self.output_format == 'tokens_attention':
            return self._tokens_attention(x)
        return self._targets(x)

    def forward(self, x: Tensor) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """(B, 3, H, W) normalised images -> (B, N, D) float32 targets, or
        the ``(tokens, attention)`` tuple (see ``output_format``)."""
        if self.inference_mode:
            with torch.inference_mode():
                out = self._output(x)
            if isinstance(out, tuple):
                return tuple(o.clone() for o in out)
            return out.clone()
        with torch.no_grad():
            return self._output(x)

    def extra_repr(self) -> str:
        return (f'model_name={self.model_name!r}, pretrained='
                f'{self.pretrained!r}, projected={self.projected}, '
                f'input_norm={self.input_norm!r}, out_dim={self.out_dim}, '
                f'output_format={self.output_format!r}')
