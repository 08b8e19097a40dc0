"""The probe's pieces on hand-made inputs whose answers are known: the three
scores, Pascal VOC boxes on the crop's patch grid, image/label lists and the
correctness picture."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from mmdtm.analysis import (format_table, majority_vote, neighbour_agreement,
                            token_accuracy)
from mmdtm.analysis.consistency_vis import (ALPHA, BOX_COLOUR, CORRECT,
                                            WRONG, compose_probe_grid,
                                            probe_grid_size)
from mmdtm.utils.morph_vis import BORDER
from mmdtm.analysis.probe_data import read_class_names, read_samples
from mmdtm.analysis.voc_boxes import (BoxFileError, boxes_in_crop,
                                      check_belongs, read_voc_xml, token_mask)

# a 4x4 grid of predictions, raster order
PRED = torch.tensor([[7, 7, 7, 2],
                     [7, 7, 2, 2],
                     [7, 5, 2, 2],
                     [5, 5, 5, 2]])


def test_token_accuracy():
    flat = PRED.flatten()
    assert token_accuracy(flat, 7) == 6 / 16
    assert token_accuracy(flat, 2) == 6 / 16
    assert token_accuracy(flat, 9) == 0.0
    inside = torch.zeros(16, dtype=torch.bool)
    inside[[0, 1, 4, 5, 9]] = True  # four 7s and one 5
    assert token_accuracy(flat, 7, inside) == 4 / 5
    assert math.isnan(token_accuracy(flat, 7, torch.zeros(16, dtype=bool)))
    with pytest.raises(ValueError, match='inside has shape'):
        token_accuracy(flat, 7, inside[:4])


def test_neighbour_agreement():
    # horizontal pairs that agree: row0 2 of 3, row1 2, row2 1, row3 2 -> 7
    # vertical pairs: col0 2 of 3, col1 2, col2 1, col3 3 -> 8; of 24 pairs
    assert neighbour_agreement(PRED) == 15 / 24
    assert neighbour_agreement(PRED.flatten()) == 15 / 24  # raster order
    assert neighbour_agreement(torch.zeros(3, 3, dtype=torch.long)) == 1.0
    checker = (torch.arange(4).view(-1, 1) + torch.arange(4)) % 2
    assert neighbour_agreement(checker) == 0.0
    with pytest.raises(ValueError, match='square'):
        neighbour_agreement(torch.arange(15))


def test_majority_vote_breaks_ties_to_smaller_class():
    assert majority_vote(PRED) == 2  # 2 and 7 tie at six tokens
    assert majority_vote(torch.tensor([3, 3, 1])) == 3
    assert majority_vote(torch.tensor([0]), num_classes=5) == 0


def test_format_table():
    table = format_table({'identity': dict(
        groups=196.0, token_accuracy=0.25, neighbour_agreement=0.5,
        image_accuracy=None)})
    assert 'identity' in table and '25.0%' in table and '50.0%' in table
    assert 'n/a' in table


VOC = """<annotation>
  <folder>val</folder><filename>{name}</filename>
  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>
  {objects}
</annotation>"""
OBJ = ('<object><name>n02123045</name><bndbox><xmin>{}</xmin><ymin>{}'
       '</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox></object>')


def _voc(path, name='img_1', w=200, h=100, boxes=((100, 0, 150, 50), ),
         raw=None):
    objects = ''.join(OBJ.format(*b) for b in boxes)
    path.write_text(raw if raw is not None else VOC.format(
        name=name, w=w, h=h, objects=objects))
    return str(path)


def test_voc_boxes_on_the_crop_grid(tmp_path):
    ann = read_voc_xml(_voc(tmp_path / 'img_1.xml',
                            boxes=((100, 0, 150, 50), (0, 0, 10, 10))))
    assert ann.size == (200, 100) and ann.names == ('n02123045', ) * 2
    # 200x100 -> shorter side 64: 128x64, centre crop x in [32, 96)
    crop = boxes_in_crop(ann.boxes, ann.size, 64)
    assert crop == [(100 * 0.64 - 32, 0.0, 64, 50 * 0.64)]  # 2nd is cut off
    # 4x4 grid of 16-pixel patches, centres at 8, 24, 40, 56
    mask = token_mask(crop, 64, 4).view(4, 4)
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[:2, 2:] = True  # x in [32, 64), y in [0, 32)
    assert torch.equal(mask, expected)
    check_belongs(ann, str(tmp_path / 'img_1.JPEG'), (200, 100))
    with pytest.raises(BoxFileError, match=r'records a 200x100 image but '
                       r'.*img_1\.JPEG is 100x200'):
        check_belongs(ann, str(tmp_path / 'img_1.JPEG'), (100, 200))
    with pytest.raises(BoxFileError, match=r"describes 'img_1', not the "
                       r'image .*img_2\.JPEG'):
        check_belongs(ann, str(tmp_path / 'img_2.JPEG'), (200, 100))


@pytest.mark.parametrize('raw,match', [
    ('<annotation><filename>a', 'not valid XML'),
    ('<boxes/>', 'root element is <boxes>'),
    ('<annotation><filename>a</filename></annotation>', 'missing <size>'),
    ('<annotation><filename>a</filename><size><width>9</width></size>'
     '</annotation>', 'missing <height> in <size>'),
    (VOC.format(name='a', w=10, h=10, objects=''), 'no <object>'),
    (VOC.format(name='a', w=10, h=10, objects=OBJ.format(1, 1, 'x', 5)),
     r'<xmax> in <object> #0 <bndbox> is not a number'),
    (VOC.format(name='a', w=10, h=10, objects=OBJ.format(5, 1, 2, 5)),
     r'box \(5.0, 1.0, 2.0, 5.0\) is empty or outside'),
])
def test_malformed_box_files(tmp_path, raw, match):
    path = _voc(tmp_path / 'a.xml', raw=raw)
    with pytest.raises(BoxFileError, match=match) as info:
        read_voc_xml(path)
    assert str(tmp_path / 'a.xml') in str(info.value)


def test_samples_from_folder_and_list(tmp_path):
    names = ['cat', 'cup', 'clock']
    for folder in ('2', 'cup'):
        (tmp_path / 'f' / folder).mkdir(parents=True)
        Image.new('RGB', (8, 8)).save(tmp_path / 'f' / folder / 'x.jpg')
    (tmp_path / 'f' / 'notes.txt').write_text('not a class folder')
    samples = read_samples(str(tmp_path / 'f'), names)
    assert [(s.path.split('/')[-2], s.label) for s in samples] == [
        ('2', 2), ('cup', 1)]
    (tmp_path / 'list.txt').write_text('f/2/x.jpg 0\nf/cup/x.jpg 2\n')
    samples = read_samples(str(tmp_path / 'list.txt'), names)
    assert [s.label for s in samples] == [0, 2]
    (tmp_path / 'bad.txt').write_text('f/2/x.jpg 0\nf/cup/x.jpg 3\n')
    with pytest.raises(ValueError, match=r'label 3 of .*x\.jpg is not '
                       r'covered by names\.txt \(3 names'):
        read_samples(str(tmp_path / 'bad.txt'), names, names_from='names.txt')
    (tmp_path / 'bad2.txt').write_text('f/2/x.jpg zero\n')
    with pytest.raises(ValueError, match=r'bad2\.txt:1: expected "path '
                       r'label"'):
        read_samples(str(tmp_path / 'bad2.txt'), names)
    (tmp_path / 'bad3.txt').write_text('f/2/y.jpg 0\n')
    with pytest.raises(FileNotFoundError, match=r'bad3\.txt:1: image not '
                       r'found'):
        read_samples(str(tmp_path / 'bad3.txt'), names)
    (tmp_path / 'g' / 'dog').mkdir(parents=True)
    with pytest.raises(ValueError, match="'dog' is neither"):
        read_samples(str(tmp_path / 'g'), names)
    (tmp_path / 'names.txt').write_text('cat\n\ncup\n')
    with pytest.raises(ValueError, match=r'names\.txt:2: empty class name'):
        read_class_names(str(tmp_path / 'names.txt'))


def test_picture_colours_follow_correctness():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    correct = [np.array([True, False, False, True]),
               np.array([True, True, True, False])]
    canvas, panels = compose_probe_grid(
        [img], ['x.jpg: cat'], [correct],
        [[('identity', 'tok 50%'), ('1x1', 'tok 75%')]], [[]], grid=2,
        cell=8)
    assert canvas.size == probe_grid_size(1, 2, 16)
    png = np.asarray(canvas).astype(np.float32)
    base = np.asarray(img.resize((16, 16), Image.BICUBIC), np.float32)
    for panel, ok in zip(panels, correct):
        left, top, right, bottom = panel.box
        crop = png[top:bottom, left:right]
        colour = np.where(ok.reshape(2, 2, 1), CORRECT, WRONG)
        expected = (1 - ALPHA) * base + ALPHA * colour.repeat(8, 0).repeat(
            8, 1)
        np.testing.assert_allclose(crop, expected, atol=0.51)
    # class borders: black lines between tokens of different class only
    pred = np.array([3, 3, 5, 3])
    canvas, panels = compose_probe_grid(
        [img], ['x'], [correct[:1]], [[('identity', '')]], [[]], grid=2,
        cell=8, preds=[[pred]])
    left, top = panels[0].box[:2]
    png = np.asarray(canvas)
    assert tuple(png[top + 4, left + 7]) != BORDER  # 3 | 3 in the top row
    assert tuple(png[top + 4, left + 8]) != BORDER
    assert tuple(png[top + 7, left + 4]) == BORDER  # 3 above 5
    assert tuple(png[top + 12, left + 7]) == BORDER  # 5 | 3
    assert tuple(png[top + 12, left + 8]) == BORDER
    assert tuple(png[top + 7, left + 12]) != BORDER  # 3 above 3
    # a box is outlined in its own colour
    canvas, panels = compose_probe_grid(
        [img], ['x'], [correct[:1]], [[('identity', '')]],
        [[(0, 0, 32, 32)]], grid=2, cell=8)
    left, top = panels[0].box[:2]
    png = np.asarray(canvas)
    assert tuple(png[top, left + 4]) == BOX_COLOUR
    assert tuple(png[top + 4, left + 15]) == BOX_COLOUR
    assert tuple(png[top + 4, left + 4]) != BOX_COLOUR
