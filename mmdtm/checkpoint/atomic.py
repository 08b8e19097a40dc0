"""Write files so that a reader (or a resumed run) sees the old or the new
content, never a truncated file: write ``<path>.tmp``, flush it to disk,
rename it over ``<path>`` (``os.replace`` is atomic on one file system)."""
import glob
import os
import os.path as osp
from typing import List

TMP_SUFFIX = '.tmp'


def fsync_path(path: str) -> None:
    """Flush ``path`` (a file, or a directory's entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(tmp: str, path: str, fsync: bool = True) -> None:
    """Rename the finished ``tmp`` over ``path``; with ``fsync``, the data
    is on disk before the rename and the rename before returning."""
    if fsync:
        fsync_path(tmp)
    os.replace(tmp, path)
    if fsync:
        fsync_path(osp.dirname(osp.abspath(path)))


def atomic_write_text(path: str, text: str, fsync: bool = True) -> None:
    """Replace ``path`` by ``text`` so that readers see old or new, never
    a truncated file."""
    tmp = path + TMP_SUFFIX
    with open(tmp, 'w') as f:
        f.write(text)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def stale_tmp_files(directory: str, filename_tmpl: str) -> List[str]:
    """``<name>.tmp`` files of ``filename_tmpl`` (``'iter_{}.pth'``) left in
    ``directory`` by a write that was killed."""
    pattern = filename_tmpl.format('*') + TMP_SUFFIX
    return sorted(glob.glob(osp.join(glob.escape(directory), pattern)))
