#!/usr/bin/env python
"""See ``python tools/model_converters/reference_to_mmdtm.py --help``; the logic is in
``mmdtm.checkpoint.cli``."""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmdtm.checkpoint.cli import reference_to_mmdtm_main  # noqa: E402

if __name__ == '__main__':
    sys.exit(reference_to_mmdtm_main())
