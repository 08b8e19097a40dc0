"""What every frozen teacher shares, whatever its source (open_clip, timm).

The teacher is held outside the module tree, frozen, always in eval mode and
run under no-grad or inference mode (optionally under autocast). The input
is optionally renormalised from the student's view to the teacher's own
statistics, and the teacher's patch grid is optionally matched to the
student's. The model name, the weights (random, a pretrained tag checked
before any download, or a local file loaded through
:func:`~mmdtm.checkpoint.compare_state_dict`) and the random-initialisation
warning live here too. Subclasses say how their library builds, reads and
converts a model, and extract its patch tokens.
"""
import contextlib
import logging
import os
import os.path as osp
from typing import (Callable, Iterator, List, Optional, Sequence, Tuple,
                    Union)

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmdtm.checkpoint.compare import (CheckpointMismatchError,
                                      compare_state_dict)
from mmdtm.upstream import ApplySeam

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
INPUT_NORMS = ('imagenet', 'clip', 'teacher')
GRID_MATCHES = (None, 'resize_input', 'resample_tokens')
AUTOCAST_DTYPES = {None: None, 'fp32': torch.float32, 'bf16': torch.bfloat16,
                   'fp16': torch.float16}
Norm = Tuple[Tuple[float, ...], Tuple[float, ...]]
_WEIGHT_SUFFIXES = ('.pt', '.pth', '.bin', '.safetensors', '.ckpt', '.npz')


def read_weights(path: str, load: Callable[[str], dict], what: str,
                 how_to_get: str) -> dict:
    """``load(path)``, or an error naming the file and how to get the
    weights: ``FileNotFoundError`` (no such file), ``RuntimeError`` (not a
    readable checkpoint)."""
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{what} weights not found: pretrained={path!r} is not a '
            f'file. ' + how_to_get)
    try:
        return load(path)
    except Exception as err:
        raise RuntimeError(
            f'{what} weights {path!r} are not a readable checkpoint '
            f'({type(err).__name__}: {err}). ' + how_to_get) from err


@contextlib.contextmanager
def explain_download(what: str, how_to_get: str) -> Iterator[None]:
    """Turn any failure to obtain pretrained weights inside the block into
    a ``RuntimeError`` that names ``what`` and says how to get them
    offline."""
    try:
        yield
    except Exception as err:
        raise RuntimeError(
            f'could not obtain {what} ({type(err).__name__}: {err}). '
            f'Offline? ' + how_to_get) from err


def random_init_warning(owner: str, model_name: str) -> str:
    """The one message for a teacher without weights (``pretrained=None``),
    logged by :class:`FrozenTeacher` and printed by ``tools/demo.py``."""
    return (f'{owner}: the {model_name} teacher is RANDOMLY INITIALISED '
            f'(pretrained=None); its targets carry no pretrained knowledge. '
            f'Set pretrained to a tag or a weights file for real training.')


def looks_like_path(pretrained: str) -> bool:
    """Whether ``pretrained`` names a local file rather than a tag."""
    return (os.sep in pretrained or pretrained.startswith('.')
            or pretrained.endswith(_WEIGHT_SUFFIXES) or osp.exists(pretrained))


def _pair(size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(size, int):
        return size, size
    return int(size[0]), int(size[1])


def grid_str(grid: Sequence[int]) -> str:
    return f'{grid[0]}x{grid[1]}'


def resample_token_map(tokens: Tensor, grid: Sequence[int],
                       out_grid: Sequence[int]) -> Tensor:
    """(B, gh * gw, D) raster-order tokens -> (B, oh * ow, D).

    Bilinear interpolation of the token map (antialiased when shrinking),
    each channel on its own.
    """
    b, n, d = tokens.shape
    grid, out_grid = _pair(grid), _pair(out_grid)
    if grid == out_grid:
        return tokens
    fmap = tokens.transpose(1, 2).reshape(b, d, *grid)
    shrink = out_grid[0] < grid[0] or out_grid[1] < grid[1]
    fmap = F.interpolate(fmap, size=out_grid, mode='bilinear',
                         align_corners=False, antialias=shrink)
    return fmap.flatten(2).transpose(1, 2)


class FrozenTeacher(ApplySeam, BaseModule):
    """Base of the frozen target generators: (B, 3, H, W) -> (B, N, D).

    Frozen for real: every parameter has ``requires_grad=False``; the tower
    is held outside ``_modules``, so it is in no ``state_dict()`` (no
    checkpoint carries it), in no ``parameters()`` (no optimizer sees it, no
    ``find_unused_parameters`` is needed) and ``train()`` never reaches it;
    ``.to()`` / ``.cuda()`` still move it. It runs under no-grad or
    inference mode, optionally under autocast. Its random weights (when no
    weights are loaded) come from a fixed seed, the global RNG untouched.

    Building (:meth:`_build_teacher`, once, at the end of a subclass'
    ``__init__``): a pretrained tag is checked against the model before
    any download; ``pretrained=None`` logs :func:`random_init_warning`; a
    weights file is read, converted and compared key by key with the model
    (:meth:`_load_weights`: missing, unexpected or mis-shaped keys raise
    :class:`~mmdtm.checkpoint.CheckpointMismatchError`).

    Args:
        model_name: the architecture in the subclass' library (checked by
            :meth:`_check_model_name`).
        pretrained: ``None`` (random weights), a pretrained tag of the
            library, or the path of a local weights file.
        input_norm: what the teacher sees. ``'imagenet'`` (reference): the
            student's normalised view as is. ``'clip'``: renormalised to
            OpenAI CLIP's mean/std. ``'teacher'``: renormalised to the
            teacher's own mean/std (its pretrained tag's, or
            ``teacher_mean``/``teacher_std``).
        data_mean / data_std: the data preprocessor's normalisation (0-255
            scale), undone by ``input_norm='clip'`` / ``'teacher'``.
        teacher_mean / teacher_std: the teacher's own statistics (0-1
            scale), for ``input_norm='teacher'``; by default those of its
            pretrained configuration.
        autocast_dtype: ``None`` (inherit the surrounding autocast, e.g. the
            AMP optimizer wrapper's), ``'fp32'`` (autocast off), ``'bf16'``
            or ``'fp16'``.
        inference_mode: use ``torch.inference_mode`` (the output is cloned so
            that it can be used in autograd); otherwise ``torch.no_grad``.
        random_init_seed: seed of the random weights.
        grid_match: what to do when the teacher's patch grid is not the
            student's. ``None`` (default): nothing; the algorithm fails at
            build time naming both grids. ``'resize_input'``: resize the
            teacher's input to ``out_grid`` x its patch size (the teacher's
            position embedding is resampled once at build time).
            ``'resample_tokens'``: run the teacher at its own input size and
            resample its token map to ``out_grid`` (bilinear).
        out_grid: (h, w), the student's patch grid; needed by
            ``grid_match``.
    """

    library = 'teacher'  # the library the teacher comes from, in messages
    how_to_get = ''  # how to get its weights offline; {name}: the model

    def __init_subclass__(cls, library: Optional[str] = None,
                          how_to_get: Optional[str] = None,
                          **kwargs) -> None:
        """``class T(FrozenTeacher, library='timm', how_to_get=...)``: the
        library named in messages, and how to get its weights offline
        (``{name}``: the model name)."""
        super().__init_subclass__(**kwargs)
        if library is not None:
            cls.library = library
        if how_to_get is not None:
            cls.how_to_get = how_to_get

    def __init__(self,
                 model_name: str,
                 pretrained: Optional[str] = None,
                 input_norm: str = 'imagenet',
                 data_mean: Sequence[float] = IMAGENET_MEAN,
                 data_std: Sequence[float] = IMAGENET_STD,
                 teacher_mean: Optional[Sequence[float]] = None,
                 teacher_std: Optional[Sequence[float]] = None,
                 autocast_dtype: Optional[str] = None,
                 inference_mode: bool = True,
                 random_init_seed: int = 0,
                 grid_match: Optional[str] = None,
                 out_grid: Optional[Sequence[int]] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if input_norm not in INPUT_NORMS:
            raise ValueError(f'input_norm must be one of {INPUT_NORMS}, got '
                             f'{input_norm!r}')
        if autocast_dtype not in AUTOCAST_DTYPES:
            raise ValueError(f'autocast_dtype must be one of '
                             f'{list(AUTOCAST_DTYPES)}, got '
                             f'{autocast_dtype!r}')
        if grid_match not in GRID_MATCHES:
            raise ValueError(f'grid_match must be one of {GRID_MATCHES}, got '
                             f'{grid_match!r}')
        if (grid_match is None) != (out_grid is None):
            raise ValueError(
                f'grid_match={grid_match!r} and out_grid={out_grid!r}: set '
                f'both (out_grid = the student patch grid, e.g. (14, 14)) '
                f'or neither')
        if (teacher_mean is None) != (teacher_std is None):
            raise ValueError('set both teacher_mean and teacher_std, or '
                             'neither')
        self._check_model_name(model_name)
        self.model_name, self.pretrained = model_name, pretrained
        # a pretrained tag of the library, else None (no weights, or a file)
        self.tag = (pretrained if pretrained is not None
                    and not looks_like_path(pretrained) else None)
        self.tag_cfg: Optional[dict] = None  # the tag's, by _build_teacher
        self.input_norm = input_norm
        self.autocast_dtype = AUTOCAST_DTYPES[autocast_dtype]
        self.inference_mode = inference_mode
        self.random_init_seed = random_init_seed
        self.grid_match = grid_match
        self.out_grid = None if out_grid is None else _pair(out_grid)
        self._data_norm = (tuple(data_mean), tuple(data_std))
        self._teacher_norm = (None if teacher_mean is None else
                              (tuple(teacher_mean), tuple(teacher_std)))

    # -- to be provided by a subclass ----------------------------------
    def _check_model_name(self, model_name: str) -> None:
        """Raise naming ``model_name`` when the library has no such
        model."""
        raise NotImplementedError

    def _check_tag(self) -> Optional[dict]:
        """The configuration of pretrained tag ``self.tag``, compared with
        the model to be built (raise naming both settings); no download."""
        raise NotImplementedError

    def _create(self) -> nn.Module:
        """The library's model: random weights, or the tag's (downloaded
        when online); a weights file is loaded afterwards."""
        raise NotImplementedError

    def _read_state(self, model: nn.Module, path: str) -> dict:
        """The tensors of weights file ``path`` (any exception: not a
        readable checkpoint)."""
        raise NotImplementedError

    def _fit_state(self, model: nn.Module,
                   state: dict) -> Tuple[nn.Module, dict, Sequence[str]]:
        """``(module, state, allow_unexpected)``: the module of ``model``
        the file loads into, the file's tensors converted to its keys, and
        the patterns of file keys it may leave unused (a classifier head).
        """
        return model, state, ()

    def _tower(self, model: nn.Module) -> nn.Module:
        """The teacher inside the library's model (raise for towers that
        give no patch tokens)."""
        return model

    @property
    def patch_size(self) -> Tuple[int, int]:
        """(ph, pw) of the teacher."""
        raise NotImplementedError

    @property
    def input_size(self) -> Tuple[int, int]:
        """(H, W) the teacher runs at (after ``'resize_input'``)."""
        raise NotImplementedError

    @property
    def out_dim(self) -> int:
        """D: the target dimension."""
        raise NotImplementedError

    def _own_norm(self) -> Norm:
        """The teacher's own mean/std (0-1 scale) for ``'teacher'``: its
        pretrained tag's, else the one all tags of the model agree on."""
        if self.tag_cfg:
            return tuple(self.tag_cfg['mean']), tuple(self.tag_cfg['std'])
        norms = self._tag_norms()
        norm = agreed_norm(norms) if norms else None
        if norm is None:
            raise ValueError(
                f"input_norm='teacher': the pretrained tags of "
                f'{self.model_name!r} do not agree on one mean/std; set '
                f'teacher_mean and teacher_std (0-1 scale)')
        return norm

    def _tag_norms(self) -> List[Norm]:
        """(mean, std) of every pretrained tag of the model (0-1 scale)."""
        raise NotImplementedError

    def _set_input_size(self, size: Tuple[int, int]) -> None:
        """Let the teacher run at ``size`` (resampling its position
        embedding); for ``grid_match='resize_input'``."""
        raise NotImplementedError

    def _patch_tokens(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) teacher-normalised -> (B, gh * gw, D) patch
        tokens, prefix tokens dropped."""
        raise NotImplementedError

    # -- shared machinery ------------------------------------------------
    def _build_teacher(self) -> None:
        """Check the tag (before any download), build the model from a
        fixed seed, load a weights file, take its teacher, match the grid,
        freeze it and set the input renormalisation. Call once, at the end
        of a subclass' ``__init__``."""
        self.tag_cfg = self._check_tag() if self.tag else None
        if self.pretrained is None:
            print_log(random_init_warning(type(self).__name__,
                                          self.model_name),
                      logger='current', level=logging.WARNING)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.random_init_seed)
            model = self._create()
        if self.pretrained is not None and self.tag is None:
            self._load_weights(model, self.pretrained)
        teacher = self._tower(model)
        # Outside _modules on purpose: see the class docstring.
        self.__dict__['teacher'] = teacher
        if self.grid_match == 'resize_input':
            self._set_input_size(tuple(
                g * p for g, p in zip(self.out_grid, self.patch_size)))
        teacher.requires_grad_(False)
        teacher.eval()
        self._set_renorm()

    def _load_weights(self, model: nn.Module, path: str) -> None:
        """The one loader of a local weights file: read it
        (:func:`read_weights`), convert it (:meth:`_fit_state`), compare it
        key by key with the module it loads into, then load it. Missing,
        unexpected or mis-shaped keys raise
        :class:`~mmdtm.checkpoint.CheckpointMismatchError` naming the file,
        the model and the keys."""
        what = f'{self.library} teacher'
        state = read_weights(path, lambda p: self._read_state(model, p),
                             what, self.how_to_get.format(
                                 name=self.model_name))
        fits = f'{what} weights {path!r} do not fit {self.library} model ' \
            f'{self.model_name!r}'
        try:
            module, state, allowed = self._fit_state(model, state)
        except Exception as err:  # unconvertible keys, shapes
            raise CheckpointMismatchError(
                f'{fits}: {type(err).__name__}: {err}') from err
        report = compare_state_dict(module.state_dict(), state,
                                    allow_unexpected=allowed)
        if not report.ok:
            raise report.error(f'{fits}:\n{report.summary(path)}')
        module.load_state_dict(state, strict=False)
        print_log(f'{type(self).__name__}: loaded {self.model_name} weights '
                  f'from {path}', logger='current')

    def _set_renorm(self) -> None:
        if self.input_norm == 'teacher':
            target = self._teacher_norm or self._own_norm()
        else:
            target = (CLIP_MEAN, CLIP_STD)
        mean, std = (torch.tensor(v, dtype=torch.float32)
                     for v in self._data_norm)
        t_mean, t_std = (torch.tensor(v, dtype=torch.float32) for v in target)
        # x_teacher = x * scale + shift, from the student's normalised view.
        self.register_buffer('renorm_scale',
                             (std / 255.0 / t_std).view(1, 3, 1, 1), False)
        self.register_buffer('renorm_shift',
                             ((mean / 255.0 - t_mean) / t_std).view(
                                 1, 3, 1, 1), False)
        # the (mean, std) the teacher sees; None: the student's view as is
        self.norm_stats = None if self.input_norm == 'imagenet' else tuple(
            tuple(float(v) for v in t) for t in target)

    def _check_tag_norm(self, source: str, tag_norm: Norm) -> None:
        """Raise when ``input_norm`` would feed a teacher trained with
        ``tag_norm`` (mean, std; 0-1 scale) other statistics."""
        if self.input_norm == 'clip':
            built, how = (CLIP_MEAN, CLIP_STD), "input_norm='clip'"
        elif self.input_norm == 'teacher' and self._teacher_norm:
            built, how = self._teacher_norm, 'teacher_mean/teacher_std'
        else:
            return
        if agreed_norm([tag_norm, built]) is None:
            raise ValueError(
                f'{source} was trained with mean/std {_fmt(tag_norm)}, but '
                f'{how} feeds the teacher mean/std {_fmt(built)}; use '
                f"input_norm='teacher' (without teacher_mean/teacher_std: "
                f"the tag's own) or 'imagenet' (the student's view as is)")

    @property
    def teacher_grid(self) -> Tuple[int, int]:
        """(gh, gw): the grid of the teacher's own tokens."""
        size, patch = self.input_size, self.patch_size
        return size[0] // patch[0], size[1] // patch[1]

    @property
    def grid(self) -> Tuple[int, int]:
        """(h, w): the patch grid of the targets."""
        return self.out_grid if self.grid_match else self.teacher_grid

    @property
    def num_patches(self) -> int:
        """N: the number of targets per image."""
        grid = self.grid
        return grid[0] * grid[1]

    def describe_grid(self) -> str:
        """E.g. ``'16x16 (224x224 px / patch 14)'``, for error messages."""
        size, patch = self.input_size, self.patch_size
        text = (f'{grid_str(self.teacher_grid)} ({grid_str(size)} px / '
                f'patch {patch[0]})')
        if self.grid_match == 'resample_tokens':
            text += f' resampled to {grid_str(self.out_grid)}'
        return text

    def extra_repr(self) -> str:
        return (f'model_name={self.model_name!r}, pretrained='
                f'{self.pretrained!r}, input_norm={self.input_norm!r}, '
                f'out_dim={self.out_dim}, grid={grid_str(self.grid)}')

    def unregistered_modules(self) -> List[nn.Module]:
        """The teacher moves with this module (``.to()``, ``.half()``)."""
        return [self.teacher]

    def train(self, mode: bool = True) -> 'FrozenTeacher':
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

    def _teacher_input(self, x: Tensor) -> Tensor:
        """Renormalise and (``'resize_input'``) resize; check the size."""
        if self.input_norm != 'imagenet':
            x = x * self.renorm_scale.to(x.dtype) + self.renorm_shift.to(
                x.dtype)
        size = self.input_size
        if self.grid_match == 'resize_input' and tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode='bicubic',
                              align_corners=False, antialias=True)
        if tuple(x.shape[-2:]) != size:
            raise ValueError(
                f'{type(self).__name__}: the teacher runs at '
                f'{grid_str(size)} px but got {grid_str(x.shape[-2:])} '
                f"images; use grid_match='resize_input' or a teacher built "
                f'for this size')
        return x

    def _targets(self, x: Tensor) -> Tensor:
        x = self._teacher_input(x)
        with self._autocast(x.device.type):
            tokens = self._patch_tokens(x)
        tokens = tokens.float()
        if self.grid_match == 'resample_tokens':
            tokens = resample_token_map(tokens, self.teacher_grid,
                                        self.out_grid)
        return tokens

    def _output(self, x: Tensor):
        return self._targets(x)

    def forward(self, x: Tensor) -> Union[Tensor, Tuple[Tensor, ...]]:
        """(B, 3, H, W) normalised images -> (B, N, D) float32 targets."""
        if self.inference_mode:
            with torch.inference_mode():
                out = self._output(x)
            if isinstance(out, tuple):
                return tuple(o.clone() for o in out)
            return out.clone()
        with torch.no_grad():
            return self._output(x)


def check_tag_agrees(source: str, field: str, tag_value, built_value,
                     fix: str) -> None:
    """Raise, naming both settings, when a pretrained tag's configuration
    disagrees with the teacher being built (before any download)."""
    if tag_value != built_value:
        raise ValueError(
            f'{source} was trained with {field}={tag_value!r}, but the '
            f'teacher being built has {field}={built_value!r}; {fix}')


def _fmt(norm: Norm) -> str:
    return '/'.join(str(tuple(round(float(v), 4) for v in t)) for t in norm)


def agreed_norm(norms: Sequence[Norm]) -> Optional[Norm]:
    """The mean/std shared by all ``norms`` (0-1 scale), else ``None``."""
    rounded = {tuple(tuple(round(float(v), 6) for v in t) for t in n)
               for n in norms}
    if len(rounded) != 1:
        return None
    mean, std = norms[0]
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)
