"""Check, before anything is built, that a config's data is where it says.

Without the data, MMPretrain's datasets fail deep inside the data loader
build (``FileNotFoundError: ... 'data/imagenet/train'``), after the model
and the teacher were built, and the message names neither the config key
nor where the data should come from.
"""
import os.path as osp
from typing import Iterator, Optional, Sequence, Tuple

#: where README.md explains how to lay out the data
DATA_DOCS = 'README.md, section "Training on ImageNet"'


def _datasets(cfg, field: str) -> Iterator[Tuple[str, dict]]:
    """(dotted key, dataset config) of ``field``'s dataset and of the
    datasets it wraps (``dataset=dict(...)``, ``datasets=[...]``)."""
    loader = cfg.get(field)
    if not loader or not loader.get('dataset'):
        return
    todo = [(f'{field}.dataset', loader['dataset'])]
    while todo:
        key, dataset = todo.pop(0)
        yield key, dataset
        if isinstance(dataset.get('dataset'), dict):
            todo.append((f'{key}.dataset', dataset['dataset']))
        for i, inner in enumerate(dataset.get('datasets') or ()):
            if isinstance(inner, dict):
                todo.append((f'{key}.datasets.{i}', inner))


def _is_local(path) -> bool:
    return isinstance(path, str) and bool(path) and '://' not in path


def _missing(dataset: dict) -> Optional[Tuple[str, str]]:
    """(field, path) of the first folder ``dataset`` needs that is absent."""
    root = dataset.get('data_root')
    if not _is_local(root):
        return None
    if not osp.isdir(root):
        return 'data_root', root
    prefix = dataset.get('data_prefix')
    if isinstance(prefix, dict):
        prefix = prefix.get('img_path')
    subdir = prefix or dataset.get('split')
    if _is_local(subdir) and not osp.isdir(osp.join(root, subdir)):
        return ('data_prefix' if prefix else 'split'), osp.join(root, subdir)
    return None


def check_data_roots(cfg, fields: Sequence[str] = ('train_dataloader',)
                     ) -> None:
    """Raise ``FileNotFoundError`` naming the config key to set when a
    dataset's local ``data_root`` (or its ``split`` / ``data_prefix``
    folder) does not exist. Remote paths (``s3://``...) are not checked.

    Args:
        cfg: an MMEngine config (or dict).
        fields: the data loader keys to check.
    """
    for field in fields:
        for key, dataset in _datasets(cfg, field):
            missing = _missing(dataset)
            if missing is None:
                continue
            which, path = missing
            raise FileNotFoundError(
                f'{key}.{which}: no such folder {path!r} (the '
                f'{dataset.get("type", "dataset")} data; working directory '
                f'{osp.abspath(".")}). Put the data there or set '
                f'--cfg-options {key}.data_root=/path/to/data; '
                f'{DATA_DOCS}, explains the layout.')
