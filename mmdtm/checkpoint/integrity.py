"""Is a checkpoint file complete and readable? (Which file to resume from
is :mod:`mmdtm.checkpoint.resume`'s question.)"""
import os.path as osp
import zipfile
from typing import Optional

import torch


def checkpoint_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be resumed from, or ``None`` when it is sound.

    ``torch.save`` writes a zip archive with a CRC-32 per member. A file cut
    short (a copy stopped half way, a full disk) has no end-of-archive
    record; a flipped byte (bit rot, a bad transfer) fails a member's CRC.
    Reading every member checks both without unpickling anything. Files in
    torch's legacy (non-zip) format are checked by loading them.
    """
    if not osp.isfile(path):
        return 'no such file'
    size = osp.getsize(path)
    if size == 0:
        return 'empty file'
    if not zipfile.is_zipfile(path):
        try:  # torch's legacy format, or garbage
            torch.load(path, map_location='cpu')
        except Exception as exc:  # noqa: BLE001 - any failure is the answer
            return (f'truncated or not a torch checkpoint ({size} bytes, no '
                    f'zip end record; {type(exc).__name__}: {exc})')
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        return f'unreadable zip archive ({type(exc).__name__}: {exc})'
    if bad is not None:
        return f'corrupt: CRC mismatch in member {bad!r}'
    return None
