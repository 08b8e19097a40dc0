"""``mmdtm::path`` configs: where they live and how MMEngine finds them.

MMEngine resolves ``_base_ = ['mmdtm::dtm/<config>.py']`` only for packages
in its ``MODULE2PACKAGE`` table, and then reads
``<installed mmdtm>/.mim/configs/<path>`` (``setup.py`` writes ``.mim/``:
copies in a wheel, symlinks in an editable install). ``import mmdtm`` calls
:func:`register_config_package`, which adds the one entry
``'mmdtm': 'mmdtm'`` to that table (nothing is replaced). MMEngine parses
``_base_`` before it runs a config's ``custom_imports``, so ``mmdtm`` must be
imported before ``Config.fromfile`` (mmdtm's ``tools/*.py`` do; see the
README for other entry points).
"""
import os.path as osp

MIM_DIR = osp.join(osp.dirname(osp.abspath(__file__)), '.mim')


def register_config_package() -> None:
    """Let MMEngine resolve ``mmdtm::`` config paths. Idempotent."""
    from mmengine.config.utils import MODULE2PACKAGE
    MODULE2PACKAGE.setdefault('mmdtm', 'mmdtm')


def config_path(rel: str) -> str:
    """Absolute path of ``configs/<rel>`` inside the installed package.

    Raises:
        FileNotFoundError: no such config (or ``.mim/`` was not written:
            an install that did not go through ``setup.py``).
    """
    path = osp.join(MIM_DIR, 'configs', rel)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'mmdtm::{rel}: no file {path}. Configs ship under mmdtm/.mim/ '
            f'in the wheel (setup.py writes them); reinstall mmdtm with pip '
            f'(pip install -e . in a clone).')
    return path
