"""iNaturalist (2017-2021 JSON releases) to MMPretrain annotation files.

The official ``train20XX.json`` / ``val20XX.json`` files are COCO-style:
``images`` (``id``, ``file_name``), ``annotations`` (``image_id``,
``category_id``) and ``categories`` (``id``, ``name``). MMPretrain has no
iNaturalist dataset class; :func:`convert_inaturalist` writes what its
``CustomDataset`` reads instead:

* ``<out>/train.txt``, ``<out>/val.txt``: one ``file_name label`` line per
  image (``file_name`` relative to the data root, as in the JSON);
* ``<out>/classes.txt``: one class name per line, line ``i`` = label ``i``.

Labels are the training file's category ids in ascending order, renumbered
0..C-1 (the identity for the official releases, whose ids already run
0..C-1), so train and val always share one mapping. Anything the files do
not hold as expected raises :class:`INatFormatError` naming the file, the
field and the entry.
"""
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple


class INatFormatError(ValueError):
    """An iNaturalist JSON file is not what the converter expects."""


def _fail(path: str, where: str, what: str) -> None:
    raise INatFormatError(f'{path}: {where}: {what}')


def load_inat_json(path: str) -> dict:
    """Read one official iNaturalist JSON file, checking its top level."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'iNaturalist annotation file not found: '
                                f'{path}')
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise INatFormatError(f'{path}: not valid JSON ({err})') from err
    except UnicodeDecodeError as err:
        raise INatFormatError(f'{path}: not UTF-8 text ({err})') from err
    if not isinstance(data, dict):
        _fail(path, 'top level', f'expected a JSON object with "images" and '
              f'"annotations", got {type(data).__name__}')
    for key in ('images', 'annotations'):
        if key not in data:
            _fail(path, 'top level', f'missing field "{key}" (has '
                  f'{sorted(data)})')
        if not isinstance(data[key], list):
            _fail(path, f'"{key}"', f'expected a list, got '
                  f'{type(data[key]).__name__}')
    if 'categories' in data and not isinstance(data['categories'], list):
        _fail(path, '"categories"', f'expected a list, got '
              f'{type(data["categories"]).__name__}')
    return data


def _field(path: str, kind: str, index: int, entry, key: str, types):
    if not isinstance(entry, dict):
        _fail(path, f'"{kind}"[{index}]', f'expected an object, got '
              f'{type(entry).__name__}')
    if key not in entry:
        _fail(path, f'"{kind}"[{index}]', f'missing field "{key}"')
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, types):
        _fail(path, f'"{kind}"[{index}]["{key}"]',
              f'expected {" or ".join(t.__name__ for t in types)}, got '
              f'{value!r}')
    return value


def image_labels(data: dict, path: str) -> List[Tuple[str, int]]:
    """``(file_name, category_id)`` of every image, in the file's order.

    Every image needs exactly one category (one annotation, or several that
    agree); every annotation must refer to a listed image.
    """
    files: Dict[int, str] = {}
    for i, img in enumerate(data['images']):
        img_id = _field(path, 'images', i, img, 'id', (int, ))
        name = _field(path, 'images', i, img, 'file_name', (str, ))
        if not name.strip() or '\n' in name or name != name.strip():
            _fail(path, f'"images"[{i}]["file_name"]',
                  f'{name!r} is empty or has leading/trailing whitespace')
        if img_id in files:
            _fail(path, f'"images"[{i}]["id"]', f'duplicate image id '
                  f'{img_id}')
        files[img_id] = name
    cats: Dict[int, int] = {}
    for i, ann in enumerate(data['annotations']):
        img_id = _field(path, 'annotations', i, ann, 'image_id', (int, ))
        cat = _field(path, 'annotations', i, ann, 'category_id', (int, ))
        if img_id not in files:
            _fail(path, f'"annotations"[{i}]["image_id"]',
                  f'{img_id} is not the id of any entry of "images"')
        if cats.setdefault(img_id, cat) != cat:
            _fail(path, f'"annotations"[{i}]', f'image {img_id} '
                  f'({files[img_id]}) has two categories, {cats[img_id]} '
                  f'and {cat}')
    unlabelled = [i for i in files if i not in cats]
    if unlabelled:
        _fail(path, '"annotations"', f'{len(unlabelled)} image(s) have no '
              f'annotation, e.g. id {unlabelled[0]} '
              f'({files[unlabelled[0]]}); is this a test-set file?')
    return [(files[i], cats[i]) for i in files]


def category_names(data: dict, path: str,
                   ids: Sequence[int]) -> Dict[int, str]:
    """Category id -> name from ``categories`` (the id itself when the file
    has no ``categories``)."""
    names = {}
    for i, cat in enumerate(data.get('categories', [])):
        cat_id = _field(path, 'categories', i, cat, 'id', (int, ))
        name = str(cat.get('name', cat_id)).strip() or str(cat_id)
        names[cat_id] = name.replace('\n', ' ')
    if names:
        missing = sorted(set(ids) - set(names))
        if missing:
            _fail(path, '"categories"', f'no entry for category id '
                  f'{missing[0]} used by "annotations" '
                  f'({len(missing)} missing)')
    return {i: names.get(i, str(i)) for i in ids}


def _write_lines(path: str, lines: Sequence[str]) -> None:
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        f.writelines(f'{line}\n' for line in lines)
    os.replace(tmp, path)


def convert_inaturalist(train_json: str, val_json: str, out_dir: str,
                        prefix: str = '') -> Dict[str, int]:
    """Write ``train.txt``, ``val.txt`` and ``classes.txt`` under
    ``out_dir``.

    Args:
        train_json: the official training file (e.g. ``train2018.json``);
            its categories define the labels.
        val_json: the official validation file (``val2018.json``); every
            category it uses must occur in the training file.
        out_dir: where the three files go (created).
        prefix: prepended to every ``file_name`` (e.g. when the JSON paths
            are relative to another folder than the data root).

    Returns:
        ``{'classes': C, 'train': N_train, 'val': N_val}``; for
        iNaturalist 2018 (``train2018.json``, ``val2018.json``):
        ``{'classes': 8142, 'train': 437513, 'val': 24426}``.
    """
    train_data = load_inat_json(train_json)
    val_data = load_inat_json(val_json)
    train = image_labels(train_data, train_json)
    val = image_labels(val_data, val_json)
    ids = sorted({cat for _, cat in train})
    label_of = {cat: i for i, cat in enumerate(ids)}
    names = category_names(train_data, train_json, ids)
    for name, cat in val:
        if cat not in label_of:
            _fail(val_json, '"annotations"', f'category_id {cat} (image '
                  f'{name}) does not occur in the training file '
                  f'{train_json}')
    os.makedirs(out_dir, exist_ok=True)
    for split, samples in (('train', train), ('val', val)):
        _write_lines(osp.join(out_dir, f'{split}.txt'),
                     [f'{prefix}{name} {label_of[cat]}'
                      for name, cat in samples])
    _write_lines(osp.join(out_dir, 'classes.txt'), [names[i] for i in ids])
    return {'classes': len(ids), 'train': len(train), 'val': len(val)}


def inat_converter_main(argv: Optional[List[str]] = None) -> int:
    """Command line of ``tools/dataset_converters/inat_to_mmpretrain.py``."""
    import argparse
    parser = argparse.ArgumentParser(
        description='Convert the official iNaturalist train/val JSON files '
        'to MMPretrain annotation files (train.txt, val.txt, classes.txt).')
    parser.add_argument('train_json', help='e.g. data/inat2018/train2018.json')
    parser.add_argument('val_json', help='e.g. data/inat2018/val2018.json')
    parser.add_argument('out_dir', help='e.g. data/inat2018/meta')
    parser.add_argument('--prefix', default='',
                        help='prepended to every file_name')
    args = parser.parse_args(argv)
    counts = convert_inaturalist(args.train_json, args.val_json,
                                 args.out_dir, args.prefix)
    print(f"wrote {args.out_dir}/{{train,val,classes}}.txt: "
          f"{counts['classes']} classes, {counts['train']} training and "
          f"{counts['val']} validation images")
    return 0
