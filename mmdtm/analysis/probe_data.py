"""Images with labels and class names for the spatial-consistency probe."""
import os
import os.path as osp
from dataclasses import dataclass
from typing import List, Optional, Sequence

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')


@dataclass(frozen=True)
class Sample:
    path: str
    label: int


def read_class_names(path: str) -> List[str]:
    """One class name per line (line i = label i); blank lines are errors."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'class name file not found: {path}')
    with open(path, encoding='utf-8') as f:
        names = [line.rstrip('\n') for line in f]
    while names and not names[-1].strip():
        names.pop()
    for i, name in enumerate(names):
        if not name.strip():
            raise ValueError(f'{path}:{i + 1}: empty class name')
    if not names:
        raise ValueError(f'{path}: no class names')
    return [n.strip() for n in names]


def _folder_label(folder: str, names: Sequence[str], root: str) -> int:
    if folder.isdigit():
        return int(folder)
    if folder in names:
        return list(names).index(folder)
    raise ValueError(
        f'{osp.join(root, folder)}: a class folder must be named by its '
        f'label index (e.g. 281/) or by a class name; {folder!r} is neither')


def read_samples(source: str, class_names: Sequence[str],
                 image_root: Optional[str] = None,
                 names_from: str = 'the class name list') -> List[Sample]:
    """Images and labels from an ImageNet-style folder or a list file.

    Args:
        source: a folder ``source/<class>/<image>`` (``<class>`` = the label
            index or a class name), or a text file of ``path label`` lines
            (MMPretrain's annotation format, e.g. ImageNet's
            ``meta/val.txt``).
        class_names: C names; every label must be < C.
        image_root: folder the list file's paths are relative to (default:
            the list file's folder).
        names_from: where ``class_names`` came from, for error messages.

    Returns:
        Samples sorted by path (folder) or in file order (list).
    """
    samples = []
    if osp.isdir(source):
        for folder in sorted(os.listdir(source)):
            sub = osp.join(source, folder)
            if not osp.isdir(sub):
                continue
            label = _folder_label(folder, class_names, source)
            for name in sorted(os.listdir(sub)):
                if name.lower().endswith(IMAGE_SUFFIXES):
                    samples.append(Sample(osp.join(sub, name), label))
        where = source
    elif osp.isfile(source):
        root = osp.dirname(source) if image_root is None else image_root
        with open(source, encoding='utf-8') as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                parts = line.strip().rsplit(' ', 1)
                if len(parts) != 2 or not parts[1].lstrip('-').isdigit():
                    raise ValueError(f'{source}:{i}: expected "path label", '
                                     f'got {line.strip()!r}')
                path = osp.join(root, parts[0])
                if not osp.isfile(path):
                    raise FileNotFoundError(f'{source}:{i}: image not found: '
                                            f'{path}')
                samples.append(Sample(path, int(parts[1])))
        where = source
    else:
        raise FileNotFoundError(f'no such image folder or list file: '
                                f'{source}')
    if not samples:
        raise ValueError(f'{where}: no images found')
    for s in samples:
        if not 0 <= s.label < len(class_names):
            raise ValueError(
                f'label {s.label} of {s.path} is not covered by '
                f'{names_from} ({len(class_names)} names: labels 0..'
                f'{len(class_names) - 1}); give a class name list that '
                f'covers every label')
    return samples
