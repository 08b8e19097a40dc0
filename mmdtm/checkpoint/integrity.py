"""Find the newest complete, readable checkpoint in a work directory."""
import glob
import os.path as osp
import re
import zipfile
from typing import List, Optional, Tuple

import torch


class NoValidCheckpointError(RuntimeError):
    """Checkpoints exist, but none of them is complete and readable."""


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


def _step(path: str, pattern: str) -> Optional[int]:
    match = re.fullmatch(pattern, osp.basename(path))
    return int(match.group(1)) if match else None


def resume_candidates(work_dir: str, out_dir: Optional[str] = None,
                      filename_tmpl: str = 'iter_{}.pth') -> List[str]:
    """Checkpoints to try, best first: the one ``last_checkpoint`` names,
    then the others in ``out_dir`` (default ``work_dir``) by step, newest
    first."""
    out_dir = out_dir or work_dir
    prefix, suffix = filename_tmpl.split('{}')
    pattern = re.escape(prefix) + r'(\d+)' + re.escape(suffix)
    found = [p for p in glob.glob(osp.join(glob.escape(out_dir),
                                           filename_tmpl.format('*')))
             if _step(p, pattern) is not None]
    found.sort(key=lambda p: _step(p, pattern), reverse=True)
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            last = f.read().strip()
        if last:
            found = [last] + [p for p in found
                              if osp.abspath(p) != osp.abspath(last)]
    return found


def newest_valid_checkpoint(candidates: List[str]
                            ) -> Tuple[Optional[str], List[Tuple[str, str]]]:
    """The first sound checkpoint of ``candidates`` and the rejected ones
    before it, as ``(path, problem)`` pairs.

    Raises:
        NoValidCheckpointError: every candidate is broken (a run never
            silently starts from scratch).
    """
    rejected = []
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            return path, rejected
        rejected.append((path, problem))
    if rejected:
        listing = '; '.join(f'{p}: {why}' for p, why in rejected)
        raise NoValidCheckpointError(
            f'resume: no complete checkpoint to resume from ({listing}). '
            f'Refusing to start from scratch: restore a checkpoint, pass '
            f'--resume PATH, or move these files away to train anew.')
    return None, rejected
