"""Command-line converters (``tools/model_converters/*.py`` call these).

Both exit non-zero, listing the keys, when the result would leave any
backbone weight unloaded.
"""
import argparse
import copy
import os
import os.path as osp
import sys
from typing import List, Optional, Sequence

import torch
from torch import nn

from .compare import CheckpointMismatchError, compare_state_dict
from .convert import dtm_to_backbone, reference_to_mmdtm
from .io import StateDict, load_checkpoint_file, state_dict_of


def _save(state: StateDict, dst: str, meta: dict) -> None:
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    torch.save({'state_dict': state, 'meta': meta}, dst)


def _checked_init_cfg(backbone_cfg: dict) -> dict:
    """The backbone's ``CheckedPretrained`` init cfg (``{}`` if none)."""
    init = backbone_cfg.get('init_cfg')
    for cfg in ([init] if isinstance(init, dict) else list(init or [])):
        if cfg.get('type') == 'CheckedPretrained':
            return dict(cfg)
    return {}


def build_module(cfg: dict) -> nn.Module:
    """Build one model part from its config without loading anything
    (``init_cfg`` dropped; a scope prefix such as ``mmpretrain.`` too)."""
    import mmdtm  # noqa: F401  (registers the components)
    from mmdtm.registry import MODELS
    cfg = copy.deepcopy(dict(cfg))
    cfg.pop('init_cfg', None)
    cfg['type'] = str(cfg['type']).split('.')[-1]
    return MODELS.build(cfg)


def _backbone_cfg(config: str) -> dict:
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    if 'model' not in cfg or 'backbone' not in cfg.model:
        raise CheckpointMismatchError(f'{config}: no model.backbone')
    return cfg.model.backbone.to_dict()


def _report(report, dst: str) -> int:
    print(report.summary(dst))
    return 0 if report.ok else 1


def dtm_to_downstream(src: str, dst: str, config: str) -> int:
    """Convert an mmdtm pre-training checkpoint for ``config``'s backbone;
    0 on success, 1 (nothing written) if any backbone weight would stay
    unloaded."""
    bb_cfg = _backbone_cfg(config)
    with torch.device('meta'):  # shapes only: no memory, no initialisation
        model = build_module(bb_cfg)
    init = _checked_init_cfg(bb_cfg)
    prefix = init.get('prefix', 'backbone.')
    state = state_dict_of(load_checkpoint_file(src), src)
    out = dtm_to_backbone(state, keep_final_norm=bool(getattr(
        model, 'final_norm', False)), window=tuple(model.patch_resolution))
    report = compare_state_dict(model.state_dict(), out,
                                init.get('new_keys', ()),
                                init.get('ignore_keys', ()))
    code = _report(report, dst)
    if code:
        print(f'not written: {dst} would leave backbone weights of '
              f'{config} unloaded (missing/unexpected keys above)',
              file=sys.stderr)
        return code
    meta = dict(source=osp.abspath(src), config=config,
                converter='mmdtm dtm_to_downstream', prefix=prefix)
    _save({prefix + k: v for k, v in out.items()}, dst, meta)
    print(f'saved {len(out)} backbone tensors to {dst}')
    return 0


def reference_to_mmdtm_file(src: str, dst: str,
                            config: Optional[str] = None,
                            skip_prefixes: Sequence[str] = (),
                            trusted: bool = False) -> int:
    """Convert a reference pre-training checkpoint to mmdtm's layout; with
    ``config`` (a DTM pre-training config) the result is checked key by key
    against its backbone and neck."""
    ref = state_dict_of(load_checkpoint_file(src, trusted=trusted), src)
    out = reference_to_mmdtm(ref, skip_prefixes)
    if config:
        from mmengine.config import Config
        model_cfg = Config.fromfile(config).model
        with torch.device('meta'):  # shapes only
            shell = nn.ModuleDict({name: build_module(model_cfg[name])
                                   for name in ('backbone', 'neck')})
        report = compare_state_dict(shell.state_dict(), out)
        if _report(report, dst):
            print(f'not written: {dst} does not match {config}',
                  file=sys.stderr)
            return 1
    _save(out, dst, dict(source=osp.abspath(src),
                         converter='mmdtm reference_to_mmdtm'))
    print(f'saved {len(out)} tensors to {dst}')
    return 0


def _run(fn, *args) -> int:
    try:
        return fn(*args)
    except (CheckpointMismatchError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1


def dtm_to_downstream_main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description='Convert an mmdtm pre-training checkpoint into the '
        'backbone checkpoint a downstream config (fine-tuning, linear '
        'probing, ADE20K) loads with CheckedPretrained.')
    parser.add_argument('src', help='mmdtm pre-training checkpoint (.pth)')
    parser.add_argument('dst', help='output backbone checkpoint')
    parser.add_argument('--config', required=True,
                        help='the downstream config that will load dst')
    args = parser.parse_args(argv)
    return _run(dtm_to_downstream, args.src, args.dst, args.config)


def reference_to_mmdtm_main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description='Convert a reference (BEiT-style) DTM pre-training '
        'checkpoint into mmdtm\'s layout (backbone.*, neck.proj.*).')
    parser.add_argument('src', help='reference checkpoint (dict with "model")')
    parser.add_argument('dst', help='output mmdtm checkpoint')
    parser.add_argument('--config', default=None,
                        help='a DTM pre-training config to check against')
    parser.add_argument('--skip-prefix', action='append', default=[],
                        help='drop keys with this prefix (e.g. teacher.)')
    parser.add_argument('--trusted', action='store_true',
                        help='load with weights_only=False (can run code '
                        'from the file: only for files you trust)')
    args = parser.parse_args(argv)
    return _run(reference_to_mmdtm_file, args.src, args.dst, args.config,
                args.skip_prefix, args.trusted)
