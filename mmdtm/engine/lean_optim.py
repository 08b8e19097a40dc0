"""A lean optimizer step: one parameter group per set of hyper-parameters,
fused (or multi-tensor ``foreach``) AdamW and ``foreach`` gradient clipping.

MMEngine's and MMPretrain's constructors give every parameter its own
parameter group as soon as a ``paramwise_cfg`` is set (about 200 groups for a
ViT-B), and torch's optimizers and ``clip_grad_norm_`` then loop over them one
tensor at a time. The constructors here build exactly the same per-parameter
hyper-parameters through the constructor they extend, then merge the groups
whose hyper-parameters are equal (pre-training: decay and no decay;
layer decay: one per (layer, decay)), and pick the optimizer's fastest
implementation for the parameters' device: ``fused=True`` where torch has
fused kernels (CUDA, and CPU for AdamW), else ``foreach=True`` (both only
when the optimizer class takes them and the config does not choose itself).
Gradient clipping by norm gets ``foreach=True`` unless the config says
otherwise.

Merged groups keep every hyper-parameter of the groups they merge, set
explicitly; they drop the per-parameter ``param_name`` (listing their
parameters' names under ``param_names`` instead) and MMEngine's records
``lr_mult`` / ``decay_mult`` of how lr and weight decay were derived.
Optimizer state dicts of a grouped optimizer have fewer groups than those of
an ungrouped one, so a checkpoint written with one cannot resume the
optimizer of the other: loading one into a grouped optimizer raises an error
that says so and names the way out (:func:`refuse_other_grouping`).
"""
import inspect
from typing import Any, Dict, Hashable, List, Optional, Sequence, Tuple

import torch
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIMIZERS
from mmpretrain.utils import get_ori_model
from torch import nn

from mmdtm.degrade import log_once
from mmdtm.registry import OPTIM_WRAPPER_CONSTRUCTORS
from .layer_decay import BackboneLayerDecayOptimWrapperConstructor

# keys that name one parameter, or record how a constructor derived a
# group's lr / weight_decay (their values are in lr / weight_decay): dropped
# when groups merge
PER_PARAM_KEYS = ('param_name', 'lr_mult', 'decay_mult')


def _freeze(value: Any) -> Hashable:
    """A hashable stand-in for a group value (lists and dicts included)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_freeze(v) for v in value))
    if isinstance(value, torch.Tensor):
        return ('tensor', tuple(value.flatten().tolist()))
    return value


def merge_param_groups(groups: Sequence[Dict[str, Any]],
                       defaults: Optional[Dict[str, Any]] = None
                       ) -> List[Dict[str, Any]]:
    """Merge parameter groups whose hyper-parameters are equal.

    A group's hyper-parameters are its keys apart from ``params`` and
    :data:`PER_PARAM_KEYS`, where a key that some group sets and this one
    does not takes its value from ``defaults`` (the optimizer's), so that
    ``{}`` and ``{'lr': base_lr}`` merge. Merged groups come in the order of
    their first member, keep their parameters in order and set every such
    key explicitly; the names of their parameters (where the groups had
    ``param_name``) go to ``param_names``.

    Args:
        groups: torch-style parameter groups, ``{'params': [...], ...}``.
        defaults: the optimizer's default hyper-parameters.

    Returns:
        The merged groups (new dicts; the input is not modified).

    Examples:
        >>> a, b, c = (nn.Parameter(torch.zeros(1)) for _ in range(3))
        >>> merged = merge_param_groups([
        ...     dict(params=[a]),
        ...     dict(params=[b], weight_decay=0.0),
        ...     dict(params=[c], weight_decay=0.05)],
        ...     defaults=dict(weight_decay=0.05))
        >>> [(len(g['params']), g['weight_decay']) for g in merged]
        [(2, 0.05), (1, 0.0)]
    """
    defaults = defaults or {}
    hypers = [{k: v for k, v in group.items()
               if k != 'params' and k not in PER_PARAM_KEYS}
              for group in groups]
    keys = {k for hyper in hypers for k in hyper}
    missing = sorted(k for k in keys if k not in defaults
                     and any(k not in hyper for hyper in hypers))
    if missing:
        raise ValueError(f'parameter groups set {missing} for some '
                         f'parameters only and the optimizer has no default '
                         f'for them; give them in the optimizer config')
    merged: Dict[Hashable, Dict[str, Any]] = {}
    for group, hyper in zip(groups, hypers):
        hyper = {k: hyper[k] if k in hyper else defaults[k] for k in keys}
        key = _freeze(hyper)
        params = group['params']
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        if key not in merged:
            merged[key] = dict(hyper, params=[])
            if 'param_name' in group:
                merged[key]['param_names'] = []
        target = merged[key]
        target['params'].extend(params)
        if 'param_names' in target:
            name = group.get('param_name')
            target['param_names'].extend(
                [name] * len(params) if len(params) == 1 or name is None
                else [f'{name}[{i}]' for i in range(len(params))])
    return list(merged.values())


def optimizer_defaults(optimizer_cls: type,
                       optimizer_cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The hyper-parameters an optimizer built from ``optimizer_cfg`` gives a
    group that sets none: the config's, else the class's defaults."""
    defaults = {name: p.default for name, p in
                inspect.signature(optimizer_cls).parameters.items()
                if p.default is not inspect.Parameter.empty}
    defaults.update({k: v for k, v in optimizer_cfg.items() if k != 'type'})
    return defaults


_FUSED_WORKS: Dict[Tuple[type, str], bool] = {}


def fused_step_works(optimizer_cls: type, device_type: str) -> bool:
    """Whether ``optimizer_cls(..., fused=True)`` builds and steps on
    ``device_type`` in this torch: tried once per (class, device type) on a
    one-element parameter (public API only). Fused AdamW on CPU needs
    torch >= 2.4; without it, one logged line says so. ``False`` without
    a probe for other device types, and for CUDA when there is none."""
    if device_type not in ('cpu', 'cuda') or (
            device_type == 'cuda' and not torch.cuda.is_available()):
        return False
    key = (optimizer_cls, device_type)
    if key not in _FUSED_WORKS:
        try:
            param = torch.zeros(1, device=device_type, requires_grad=True)
            param.grad = torch.zeros_like(param)
            optimizer_cls([param], fused=True).step()
            _FUSED_WORKS[key] = True
        except (RuntimeError, ValueError, TypeError, AssertionError) as exc:
            _FUSED_WORKS[key] = False
            log_once(f'fused-{optimizer_cls.__name__}-{device_type}',
                     f'{optimizer_cls.__name__}(fused=True) does not run on '
                     f'{device_type} with torch {torch.__version__} '
                     f'({str(exc).strip().splitlines()[0][:120]}): using '
                     f'the foreach implementation instead (fused AdamW on '
                     f'CPU needs torch >= 2.4).')
    return _FUSED_WORKS[key]


def fast_kernel_kwargs(optimizer_cls: type, devices: Sequence[torch.device],
                       optimizer_cfg: Dict[str, Any]) -> Dict[str, bool]:
    """``{'fused': True}`` or ``{'foreach': True}`` (or ``{}``) for
    ``optimizer_cls`` on parameters living on ``devices``.

    Fused where the class takes ``fused`` and a fused step runs on the
    device in this torch (:func:`fused_step_works`; CUDA, CPU too since
    torch 2.4: on a 2-core CPU fused AdamW + clip
    takes a third of the time of the per-tensor loop, while ``foreach``,
    which materialises every intermediate, takes 1.5 times as long); else
    ``foreach`` where the class takes it and the device is CPU or CUDA;
    nothing when the config already sets either key, or the parameters span
    several device types.
    """
    if 'fused' in optimizer_cfg or 'foreach' in optimizer_cfg:
        return {}
    kinds = {d.type for d in devices}
    if len(kinds) != 1:
        return {}
    (kind, ) = kinds
    signature = inspect.signature(optimizer_cls).parameters
    if 'fused' in signature and fused_step_works(optimizer_cls, kind):
        return {'fused': True}
    if 'foreach' in signature and kind in ('cpu', 'cuda'):
        return {'foreach': True}
    return {}


def _layout(sizes: Sequence[int]) -> str:
    """'<n> parameter groups (sizes a, b, ...)' for group sizes."""
    shown = ', '.join(map(str, sizes[:6])) + (', ...' if len(sizes) > 6
                                              else '')
    return f'{len(sizes)} parameter groups (sizes {shown})'


def refuse_other_grouping(optimizer: torch.optim.Optimizer,
                          state_dict: Dict[str, Any]) -> None:
    """Load pre-hook of a grouped optimizer: a state dict whose groups are
    laid out differently (e.g. one group per parameter, written by
    MMEngine's or MMPretrain's ungrouped constructors) raises a
    ``ValueError`` that says why and what to do, instead of torch's bare
    "different number of parameter groups"."""
    saved = [len(g['params']) for g in state_dict.get('param_groups', [])]
    ours = [len(g['params']) for g in optimizer.param_groups]
    if saved == ours:
        return
    raise ValueError(
        f"cannot load the optimizer state: it has {_layout(saved)} but "
        f"this optimizer has {_layout(ours)}. This optimizer was built by a "
        f"Lean*OptimWrapperConstructor (optim_wrapper.constructor), which "
        f"puts parameters of equal hyper-parameters in one group; the "
        f"state was written with another grouping (one group per "
        f"parameter: MMEngine's DefaultOptimWrapperConstructor or "
        f"MMPretrain's layer-decay constructor). To resume that run, set "
        f"optim_wrapper.constructor to the constructor it was written with "
        f"(same hyper-parameters); to start afresh from its weights, use "
        f"load_from instead of resume.")


class _LeanMixin:
    """Group merging and fast kernels on top of a MMEngine constructor.

    ``add_params`` at the top level (``prefix == ''``) merges the groups the
    base constructor built; ``__call__`` adds the fast-kernel flags to the
    optimizer and to gradient clipping by norm, and
    :func:`refuse_other_grouping` as the optimizer's load pre-hook.
    """

    def add_params(self, params: List[dict], module: nn.Module,
                   prefix: str = '', **kwargs) -> None:
        if prefix:
            super().add_params(params, module, prefix=prefix, **kwargs)
            return
        built: List[dict] = []
        super().add_params(built, module, prefix=prefix, **kwargs)
        defaults = optimizer_defaults(self._optimizer_cls(),
                                      self.optimizer_cfg)
        params.extend(merge_param_groups(built, defaults))

    def _optimizer_cls(self) -> type:
        optimizer_cls = self.optimizer_cfg['type']
        if isinstance(optimizer_cls, str):
            with OPTIMIZERS.switch_scope_and_registry(None) as registry:
                optimizer_cls = registry.get(optimizer_cls)
        return optimizer_cls

    def __call__(self, model: nn.Module) -> OptimWrapper:
        devices = {p.device for p in get_ori_model(model).parameters()}
        kernels = fast_kernel_kwargs(self._optimizer_cls(),
                                     sorted(devices, key=str),
                                     self.optimizer_cfg)
        clip = self.optim_wrapper_cfg.get('clip_grad')
        saved = self.optimizer_cfg, self.optim_wrapper_cfg
        self.optimizer_cfg = dict(self.optimizer_cfg, **kernels)
        if (clip and clip.get('type', 'norm') == 'norm'
                and 'foreach' not in clip and devices
                and {d.type for d in devices} <= {'cpu', 'cuda'}):
            self.optim_wrapper_cfg = dict(self.optim_wrapper_cfg,
                                          clip_grad=dict(clip, foreach=True))
        try:
            wrapper = super().__call__(model)
        finally:
            self.optimizer_cfg, self.optim_wrapper_cfg = saved
        wrapper.optimizer.register_load_state_dict_pre_hook(
            refuse_other_grouping)
        return wrapper


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LeanOptimWrapperConstructor(_LeanMixin, DefaultOptimWrapperConstructor):
    """MMEngine's default constructor (``paramwise_cfg`` as there), with
    parameters of equal hyper-parameters in one group and fast kernels.

    Example:
        >>> optim_wrapper = dict(
        ...     optimizer=dict(type='AdamW', lr=1.5e-3, weight_decay=0.05),
        ...     constructor='LeanOptimWrapperConstructor',
        ...     clip_grad=dict(max_norm=3.0),
        ...     paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
    """


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LeanLayerDecayOptimWrapperConstructor(
        _LeanMixin, BackboneLayerDecayOptimWrapperConstructor):
    """:class:`BackboneLayerDecayOptimWrapperConstructor` (layer-wise lr
    decay for any ViT-like backbone, MMPretrain's ``paramwise_cfg``) with one
    group per (layer, hyper-parameters) and fast kernels.

    Example:
        >>> optim_wrapper = dict(
        ...     optimizer=dict(type='AdamW', lr=5e-4, weight_decay=0.05),
        ...     constructor='LeanLayerDecayOptimWrapperConstructor',
        ...     paramwise_cfg=dict(layer_decay_rate=0.65))
    """
