#!/usr/bin/env python
"""See ``python tools/model_converters/dtm_to_downstream.py --help``; the logic is in
``mmdtm.checkpoint.cli``."""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmdtm.checkpoint.cli import dtm_to_downstream_main  # noqa: E402

if __name__ == '__main__':
    sys.exit(dtm_to_downstream_main())
