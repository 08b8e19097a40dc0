"""Package metadata for mmdtm.

``install_requires`` holds version RANGES (``requirements/*.txt``); the exact
sets live in the lock files ``requirements/lock.txt`` (pinned stack) and
``requirements/oldest.txt`` (oldest tested stack), which
``tools/setup_env.sh`` installs with.

Like OpenMMLab's own packages, the wheel carries ``configs/``, ``tools/`` and
``model-index.yml`` under ``mmdtm/.mim/`` (where MMEngine's
``mmdtm::path`` config inheritance and ``mim`` look). They are copied there
when the wheel is built; an editable install (``pip install -e .``) gets
symlinks ``mmdtm/.mim/<item> -> ../../<item>`` instead (git ignores them).
"""
import os
import os.path as osp
import re
import shutil
from typing import Dict, List

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.develop import develop

HERE = osp.dirname(osp.abspath(__file__))
PACKAGE = 'mmdtm'
MIM_ITEMS = ('configs', 'tools', 'model-index.yml')
_SKIP = shutil.ignore_patterns('__pycache__', '*.pyc')


def read_version() -> str:
    with open(osp.join(HERE, 'mmdtm', 'version.py'), encoding='utf-8') as f:
        return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


def read_requirements(*names: str) -> List[str]:
    """Requirement lines of ``requirements/<name>.txt``, comments dropped."""
    reqs = []
    for name in names:
        with open(osp.join(HERE, 'requirements', f'{name}.txt'),
                  encoding='utf-8') as f:
            for line in f:
                line = line.split('#', 1)[0].strip()
                if line:
                    reqs.append(line)
    return reqs


def link_mim_items() -> None:
    """Editable installs: ``mmdtm/.mim/<item>`` -> ``../../<item>``."""
    mim = osp.join(HERE, PACKAGE, '.mim')
    os.makedirs(mim, exist_ok=True)
    for item in MIM_ITEMS:
        dst = osp.join(mim, item)
        if osp.islink(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        elif osp.exists(dst):
            os.remove(dst)
        os.symlink(osp.join('..', '..', item), dst)


def copy_mim_items(build_lib: str) -> None:
    """Wheels: copy each item into ``<build_lib>/mmdtm/.mim/``."""
    mim = osp.join(build_lib, PACKAGE, '.mim')
    for item in MIM_ITEMS:
        src, dst = osp.join(HERE, item), osp.join(mim, item)
        if not osp.exists(src):
            raise FileNotFoundError(f'{src} (listed in MIM_ITEMS) is missing')
        if osp.isdir(dst) and not osp.islink(dst):
            shutil.rmtree(dst)
        elif osp.lexists(dst):
            os.remove(dst)
        os.makedirs(mim, exist_ok=True)
        if osp.isdir(src):
            shutil.copytree(src, dst, ignore=_SKIP)
        else:
            shutil.copyfile(src, dst)


class BuildPyWithMim(build_py):
    """``build_py`` that also writes ``mmdtm/.mim/`` (copies, or symlinks in
    an editable build)."""

    def run(self) -> None:
        super().run()
        if getattr(self, 'editable_mode', False):
            link_mim_items()
        else:
            copy_mim_items(self.build_lib)


class DevelopWithMim(develop):
    """Legacy editable install (``setup.py develop``): symlinks."""

    def run(self) -> None:
        link_mim_items()
        super().run()


EXTRAS: Dict[str, List[str]] = {
    'seg': read_requirements('seg'),
    'tests': read_requirements('tests'),
}

setup(
    name='mmdtm',
    version=read_version(),
    description='Dynamic Token Morphing masked image modeling for MMPretrain',
    long_description=open(osp.join(HERE, 'README.md'), encoding='utf-8').read()
    if osp.exists(osp.join(HERE, 'README.md')) else '',
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.9',
    packages=find_packages(exclude=('tests', 'tests.*', 'configs', 'tools')),
    include_package_data=True,
    install_requires=read_requirements('runtime', 'mmcv'),
    extras_require=EXTRAS,
    cmdclass={'build_py': BuildPyWithMim, 'develop': DevelopWithMim},
    classifiers=[
        'License :: OSI Approved :: Apache Software License',
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
)
