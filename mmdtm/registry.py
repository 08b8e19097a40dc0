"""The registries mmdtm registers into; every module imports them from here.

MMPretrain's registries for what its configs build (models, transforms,
samplers, hooks, loops), so configs just work. MMEngine's root registries
where a component must be found from every scope (``default_scope``
``'mmpretrain'`` and ``'mmseg'``): runners, weight initializers and
optimizer-wrapper constructors.
"""
from mmengine.registry import (OPTIM_WRAPPER_CONSTRUCTORS, RUNNERS,
                               WEIGHT_INITIALIZERS)
from mmpretrain.registry import (DATA_SAMPLERS, HOOKS, LOOPS, MODELS,
                                 TRANSFORMS)

__all__ = [
    'DATA_SAMPLERS', 'HOOKS', 'LOOPS', 'MODELS', 'OPTIM_WRAPPER_CONSTRUCTORS',
    'RUNNERS', 'TRANSFORMS', 'WEIGHT_INITIALIZERS'
]
