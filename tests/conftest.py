"""Shared fixtures: tiny image folders, tiny configs, a clean process state
for every test. Tests build Runners with ``mmdtm.engine.build_runner``
(the configs' ``IsolatedRunner``), never ``Runner.from_cfg``."""
import os
import os.path as osp

import numpy as np
import pytest
import torch
from PIL import Image

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: dynamo of the oldest supported torch (2.1) cannot trace the static
#: morphing op (an AssertionError inside dynamo at ``static_partition``'s
#: round loop, measured in the old-stack environment); mmdtm then runs it
#: eagerly after one warning (``test_old_torch_compiles_nothing_and_warns_once``).
#: Versions between 2.1 and 2.14 were not measured, hence a conservative 2.4.
STATIC_OP_COMPILES = tuple(
    int(p) for p in torch.__version__.split('+')[0].split('.')[:2]) >= (2, 4)
needs_static_compile = pytest.mark.skipif(
    not STATIC_OP_COMPILES,
    reason=f'torch {torch.__version__} cannot compile the static morphing '
    f'op (mmdtm falls back to eager; see tests/conftest.py)')
TOY_CFG = osp.join(REPO, 'configs', 'dtm', 'dtm_vit-tiny-p16_1xb8-40iter_toy.py')

# A CLIP-style open_clip config small enough for CPU tests (64x64 inputs).
TINY_CLIP = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=64, layers=2, width=64, head_width=32,
                    patch_size=16),
    text_cfg=dict(context_length=8, vocab_size=64, width=32, heads=2,
                  layers=1))

# Tiny models run fastest on one thread; subprocesses inherit it.
os.environ.setdefault('OMP_NUM_THREADS', '1')


def make_image_folder(root: str, num: int = 16, size: int = 80,
                      seed: int = 0) -> str:
    """Write ``num`` structured RGB JPEGs (coloured blocks) under ``root``."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    for i in range(num):
        img = np.zeros((size, size, 3), np.uint8)
        for _ in range(4):
            x0, y0 = rng.integers(0, size - 16, 2)
            w, h = rng.integers(16, size // 2, 2)
            img[y0:y0 + h, x0:x0 + w] = rng.integers(0, 255, 3)
        img += rng.integers(0, 20, img.shape, dtype=np.uint8)
        Image.fromarray(img).save(osp.join(root, f'img_{i:03d}.jpg'))
    return root


@pytest.fixture(scope='session')
def toy_images(tmp_path_factory) -> str:
    return make_image_folder(str(tmp_path_factory.mktemp('toy_images')))


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same global RNG state (no flaky draws)."""
    import random

    import torch
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _restore_process_state():
    """Each test leaves the process as it found it: environment variables,
    working directory, torch's thread count, no MMEngine instance it
    created (loggers, message hubs, visualizers: process-wide objects
    looked up by name) outlives it, and what
    ``mmdtm.setup_checkpoint_loading`` changes (tools/train.py calls it) is
    undone: torch's ``weights_only`` allow-list and MMEngine's http(s)
    checkpoint loader."""
    import logging

    import torch
    from mmengine.runner.checkpoint import CheckpointLoader, load_from_http

    from mmdtm.checkpoint.url import URL_PREFIXES
    from mmdtm.engine.runner import manager_classes
    environ, cwd, threads = dict(os.environ), os.getcwd(), \
        torch.get_num_threads()
    serialization = torch.serialization
    safe = (serialization.get_safe_globals()
            if hasattr(serialization, 'get_safe_globals') else None)
    before = {cls: set(vars(cls).get('_instance_dict', ()))
              for cls in manager_classes()}
    yield
    for cls in manager_classes():
        instances = vars(cls).get('_instance_dict', {})
        for name in [n for n in instances if n not in before.get(cls, ())]:
            instance = instances.pop(name)
            if isinstance(instance, logging.Logger):
                for handler in list(instance.handlers):
                    handler.close()
                    instance.removeHandler(handler)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(environ)
    torch.set_num_threads(threads)
    if safe is not None:
        serialization.clear_safe_globals()
        serialization.add_safe_globals(safe)
    # MMEngine's own loader (mmdtm no longer replaces it at import)
    CheckpointLoader.register_scheme(URL_PREFIXES, load_from_http, force=True)


@pytest.fixture
def checkpoint_loading():
    """The process as mmdtm's tools set it up
    (``mmdtm.setup_checkpoint_loading()``); undone after the test by
    ``_restore_process_state``. Yields the list of changes made."""
    from mmdtm import setup_checkpoint_loading
    yield setup_checkpoint_loading()


@pytest.fixture
def round_calls(monkeypatch):
    """Counts the matching rounds each eager partition method runs:
    ``{'rounds': n, 'gram': n}`` (calls of ``_match_round`` and
    ``_gram_round``, which still run)."""
    import mmdtm.morphing.partition as part
    calls = {'rounds': 0, 'gram': 0}
    for method, name in (('rounds', '_match_round'), ('gram', '_gram_round')):
        def spy(*args, _fn=getattr(part, name), _method=method):
            calls[_method] += 1
            return _fn(*args)
        monkeypatch.setattr(part, name, spy)
    return calls


@pytest.fixture(autouse=True)
def _default_scope():
    from mmengine.registry import DefaultScope, init_default_scope
    import mmdtm  # noqa: F401
    init_default_scope('mmpretrain')
    yield
    DefaultScope._instance_dict.clear()


def toy_config(work_dir: str, data_root: str, max_iters: int = 40,
               **options):
    """The toy DTM config, pointed at ``data_root``, writing to ``work_dir``.

    ``options`` are MMEngine ``--cfg-options`` style dotted keys.
    """
    from mmengine.config import Config

    from mmdtm.engine import shorten_schedule
    cfg = shorten_schedule(Config.fromfile(TOY_CFG), max_iters)
    cfg.work_dir = work_dir
    cfg.train_dataloader.dataset.data_root = data_root
    cfg.default_hooks.logger.interval = 1
    cfg.merge_from_dict(options)
    return cfg
