#!/usr/bin/env python
"""Official iNaturalist train/val JSON -> MMPretrain annotation files.

    python tools/dataset_converters/inat_to_mmpretrain.py \
        data/inat2018/train2018.json data/inat2018/val2018.json \
        data/inat2018/meta

See ``--help``; the logic is in ``mmdtm.datasets.inaturalist``.
"""
import os.path as osp
import sys

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO)

from mmdtm.datasets.inaturalist import inat_converter_main  # noqa: E402

if __name__ == '__main__':
    sys.exit(inat_converter_main())
