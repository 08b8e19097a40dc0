"""Capture and restore the global RNG states (python, numpy, torch), of
this process and of every rank."""
import logging
import random
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.logging import print_log


def get_rng_state() -> Dict[str, Any]:
    """This process's python, numpy, torch CPU and CUDA RNG states.

    Only tuples, ints, strings, floats and tensors, so that a checkpoint
    holding them loads with ``torch.load(weights_only=True)``.
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = dict(
        python=random.getstate(),
        numpy=(kind, torch.from_numpy(keys.astype(np.int64)), int(pos),
               int(has_gauss), float(gauss)),
        torch=torch.get_rng_state(),
    )
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` captured."""
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos,
                         has_gauss, cached))
    torch.set_rng_state(state['torch'])
    cuda = state.get('cuda')
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def gather_rng_states() -> List[Dict[str, Any]]:
    """Every rank's :func:`get_rng_state`, indexed by rank (a collective:
    all ranks call it)."""
    state = get_rng_state()
    return all_gather_object(state) if get_world_size() > 1 else [state]


def own_rng_state(states: Optional[Sequence[Dict[str, Any]]]
                  ) -> Optional[Dict[str, Any]]:
    """This rank's entry of ``states`` (from :func:`gather_rng_states`), or
    ``None`` with a warning when another number of processes saved them
    (the resumed run is then not bit-identical)."""
    if states is None:
        return None
    if len(states) != get_world_size():
        print_log(f'the checkpoint holds RNG states of {len(states)} '
                  f'processes but {get_world_size()} run now: RNG states '
                  f'not restored, the resumed run is not bit-identical',
                  logger='current', level=logging.WARNING)
        return None
    return states[get_rank()]
