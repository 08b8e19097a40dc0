"""The iNaturalist converter: official-style JSON in, MMPretrain annotation
files out, and a clear error naming the file and field for bad input."""
import json
import os.path as osp
import runpy
import sys

import pytest

from mmdtm.datasets.inaturalist import INatFormatError, convert_inaturalist

from ..conftest import REPO

TOOL = osp.join(REPO, 'tools', 'dataset_converters', 'inat_to_mmpretrain.py')


def inat_json(images, categories=None) -> dict:
    """``images``: (id, file_name, category_id) triples."""
    data = dict(
        info=dict(year=2018),
        images=[dict(id=i, file_name=f, width=80, height=60)
                for i, f, _ in images],
        annotations=[dict(id=100 + k, image_id=i, category_id=c)
                     for k, (i, _, c) in enumerate(images)])
    if categories is not None:
        data['categories'] = [dict(id=c, name=n, supercategory='Plantae')
                              for c, n in categories]
    return data


def write(path, data) -> str:
    with open(path, 'w') as f:
        f.write(data if isinstance(data, str) else json.dumps(data))
    return str(path)


CATS = [(9, 'Quercus robur'), (2, 'Bufo bufo'), (5, 'Parus major')]
TRAIN = inat_json([(1, 'train_val2018/Plantae/9/a.jpg', 9),
                   (2, 'train_val2018/Amphibia/2/b.jpg', 2),
                   (3, 'train_val2018/Aves/5/c.jpg', 5),
                   (4, 'train_val2018/Aves/5/d.jpg', 5)], CATS)
VAL = inat_json([(7, 'train_val2018/Aves/5/e.jpg', 5),
                 (8, 'train_val2018/Plantae/9/f.jpg', 9)], CATS)


def _lines(path):
    with open(path) as f:
        return f.read().splitlines()


def test_converts_to_annotation_files_mmpretrain_reads(tmp_path):
    train = write(tmp_path / 'train2018.json', TRAIN)
    val = write(tmp_path / 'val2018.json', VAL)
    out = str(tmp_path / 'meta')
    counts = convert_inaturalist(train, val, out)
    assert counts == {'classes': 3, 'train': 4, 'val': 2}
    # category ids 2, 5, 9 -> labels 0, 1, 2 (ascending id order)
    assert _lines(osp.join(out, 'classes.txt')) == [
        'Bufo bufo', 'Parus major', 'Quercus robur']
    assert _lines(osp.join(out, 'train.txt')) == [
        'train_val2018/Plantae/9/a.jpg 2', 'train_val2018/Amphibia/2/b.jpg 0',
        'train_val2018/Aves/5/c.jpg 1', 'train_val2018/Aves/5/d.jpg 1']
    assert _lines(osp.join(out, 'val.txt')) == [
        'train_val2018/Aves/5/e.jpg 1', 'train_val2018/Plantae/9/f.jpg 2']

    from mmpretrain.datasets import CustomDataset
    ds = CustomDataset(data_root=str(tmp_path), ann_file='meta/val.txt',
                       classes=osp.join(out, 'classes.txt'), lazy_init=False)
    assert list(ds.get_gt_labels()) == [1, 2]
    assert ds.get_data_info(0)['img_path'] == osp.join(
        str(tmp_path), 'train_val2018/Aves/5/e.jpg')
    assert ds.CLASSES == ('Bufo bufo', 'Parus major', 'Quercus robur')


def test_command_line_and_files_without_categories(tmp_path, capsys,
                                                    monkeypatch):
    plain = {k: v for k, v in TRAIN.items() if k != 'categories'}
    train = write(tmp_path / 'train.json', plain)
    val = write(tmp_path / 'val.json', VAL)
    monkeypatch.setattr(sys, 'argv', [TOOL, train, val,
                                      str(tmp_path / 'm'), '--prefix',
                                      'img/'])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(TOOL, run_name='__main__')
    assert exit_info.value.code == 0
    assert '3 classes, 4 training and 2 validation' in capsys.readouterr().out
    # without "categories" the class name is the category id
    assert _lines(tmp_path / 'm' / 'classes.txt') == ['2', '5', '9']
    assert _lines(tmp_path / 'm' / 'val.txt')[0] == \
        'img/train_val2018/Aves/5/e.jpg 1'


def _bad_images(**change):
    data = json.loads(json.dumps(TRAIN))
    data['images'][1].update(change)
    return data


@pytest.mark.parametrize('which,content,match', [
    ('train', '{"images": [', r'train\.json: not valid JSON'),
    ('train', [1, 2], r'train\.json: top level: expected a JSON object'),
    ('train', {'images': []}, r'train\.json: top level: missing field '
     r'"annotations"'),
    ('train', {'images': {}, 'annotations': []},
     r'train\.json: "images": expected a list'),
    ('train', inat_json([(1, 'a.jpg', 0)]) | {'images': [{'id': 1}]},
     r'train\.json: "images"\[0\]: missing field "file_name"'),
    ('train', _bad_images(id='2'),
     r'train\.json: "images"\[1\]\["id"\]: expected int'),
    ('train', _bad_images(file_name='x y.jpg '),
     r'train\.json: "images"\[1\]\["file_name"\]'),
    ('train', inat_json([(1, 'a.jpg', 0)]) | {'annotations': [
        {'image_id': 5, 'category_id': 0}]},
     r'train\.json: "annotations"\[0\]\["image_id"\]: 5 is not the id'),
    ('train', inat_json([(1, 'a.jpg', 0)]) | {'annotations': [
        {'image_id': 1}]},
     r'train\.json: "annotations"\[0\]: missing field "category_id"'),
    ('train', inat_json([(1, 'a.jpg', 0), (1, 'a.jpg', 3)])
     | {'images': [{'id': 1, 'file_name': 'a.jpg'}]},
     r'train\.json: "annotations"\[1\]: image 1 \(a\.jpg\) has two'),
    ('train', inat_json([(1, 'a.jpg', 0)]) | {'annotations': []},
     r'train\.json: "annotations": 1 image\(s\) have no annotation'),
    ('train', inat_json([(1, 'a.jpg', 4)], [(3, 'x')]),
     r'train\.json: "categories": no entry for category id 4'),
    ('val', inat_json([(1, 'a.jpg', 7)]),
     r'val\.json: "annotations": category_id 7 \(image a\.jpg\) does not '
     r'occur in the training file'),
])
def test_malformed_json_names_file_and_field(tmp_path, which, content,
                                             match):
    files = {'train': TRAIN, 'val': VAL, which: content}
    train = write(tmp_path / 'train.json', files['train'])
    val = write(tmp_path / 'val.json', files['val'])
    with pytest.raises(INatFormatError, match=match):
        convert_inaturalist(train, val, str(tmp_path / 'meta'))
    assert not (tmp_path / 'meta').exists()  # nothing half-written


def test_missing_file(tmp_path):
    val = write(tmp_path / 'val.json', VAL)
    with pytest.raises(FileNotFoundError, match='nope.json'):
        convert_inaturalist(str(tmp_path / 'nope.json'), val,
                            str(tmp_path / 'meta'))
