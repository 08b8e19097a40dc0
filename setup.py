"""Package metadata for mmdtm."""
import os.path as osp
import re

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def read_version() -> str:
    with open(osp.join(HERE, 'mmdtm', 'version.py'), encoding='utf-8') as f:
        return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


def read_requirements(*names: str) -> list:
    """Requirement lines of ``requirements/<name>.txt``, comments dropped."""
    reqs = []
    for name in names:
        with open(osp.join(HERE, 'requirements', f'{name}.txt'),
                  encoding='utf-8') as f:
            for line in f:
                line = line.split('#', 1)[0].strip()
                if line and line not in ('wheel', 'ninja'):
                    reqs.append(line)
    return reqs


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
    install_requires=read_requirements('build', 'mmcv', 'runtime'),
    extras_require={'tests': read_requirements('tests')},
    classifiers=[
        'License :: OSI Approved :: Apache Software License',
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
)
