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


def register_config_package() -> None:
    """Let MMEngine resolve ``mmdtm::`` config paths. Idempotent."""
    from mmengine.config.utils import MODULE2PACKAGE
    MODULE2PACKAGE.setdefault('mmdtm', 'mmdtm')
