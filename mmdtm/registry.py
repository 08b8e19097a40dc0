"""The registries mmdtm registers into; every module imports them from here.

MMPretrain's registries for what its configs build (models, transforms,
samplers, hooks, loops), so configs just work. MMEngine's root registries
where a component must be found from every scope (``default_scope``
``'mmpretrain'`` and ``'mmseg'``): runners, weight initializers and
optimizer-wrapper constructors.

A config that inherits ``_base_ = ['mmdtm::...']`` gets ``_scope_='mmdtm'``
on the base's dicts (MMEngine names the scope after the package), and
MMEngine then looks for registries of scope ``'mmdtm'``. Each of
MMPretrain's registries therefore gets one empty child of scope
``'mmdtm'`` (:func:`add_mmdtm_scope`): a lookup there falls through to
MMPretrain's registry and MMEngine's root, exactly as in scope
``'mmpretrain'``. Nothing is registered into these children.
"""
from typing import Dict

import mmpretrain.registry as mmpretrain_registry
from mmengine.registry import (OPTIM_WRAPPER_CONSTRUCTORS, RUNNERS,
                               WEIGHT_INITIALIZERS, Registry)
from mmpretrain.registry import (DATA_SAMPLERS, HOOKS, LOOPS, MODELS,
                                 TRANSFORMS)

SCOPE = 'mmdtm'


class ScopeAlias(Registry):
    """An empty registry of scope ``'mmdtm'`` under one of MMPretrain's.

    MMPretrain registers lazily (its registries import their ``locations``
    on first lookup), and MMEngine's lookup from a child reads the parents'
    tables without importing: a lookup here imports the parent's modules
    first.
    """

    def import_from_location(self) -> None:
        super().import_from_location()
        self.parent.import_from_location()


def add_mmdtm_scope() -> Dict[str, Registry]:
    """Give every MMPretrain registry an empty child of scope ``'mmdtm'``
    (idempotent). Returns them by MMPretrain's attribute name."""
    children = {}
    for name in mmpretrain_registry.__all__:
        parent = getattr(mmpretrain_registry, name)
        if not isinstance(parent, Registry):
            continue
        child = parent.children.get(SCOPE)
        if child is None:
            child = ScopeAlias(parent.name, parent=parent, scope=SCOPE)
        children[name] = child
    return children


SCOPE_REGISTRIES = add_mmdtm_scope()

__all__ = [
    'DATA_SAMPLERS', 'HOOKS', 'LOOPS', 'MODELS', 'OPTIM_WRAPPER_CONSTRUCTORS',
    'RUNNERS', 'TRANSFORMS', 'WEIGHT_INITIALIZERS', 'SCOPE_REGISTRIES'
]
