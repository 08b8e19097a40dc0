"""tools/analysis/spatial_consistency.py on the shipped photographs with a
small randomly initialised open_clip model (image and text towers) saved to
a file: the JSON against an independent recomputation, the PNG, and the
errors for a model without a text tower, a box file of another image and
class names that do not cover the labels."""
import importlib.util
import json
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mmdtm.analysis.consistency_vis import (ALPHA, BOX_COLOUR, CORRECT,
                                            WRONG, probe_grid_size)
from mmdtm.analysis.voc_boxes import BoxFileError
from mmdtm.analysis.zero_shot import NoTextTowerError
from mmdtm.visualization.morph_vis import load_image, teacher_tokens

from ..conftest import REPO, TINY_CLIP

TOOL = osp.join(REPO, 'tools', 'analysis', 'spatial_consistency.py')
PHOTOS = osp.join(REPO, 'demo', 'images')
# TINY_CLIP with a text tower open_clip's tokenizer fits (49408 ids)
TEXT_CLIP = dict(TINY_CLIP, text_cfg=dict(TINY_CLIP['text_cfg'],
                                          context_length=16,
                                          vocab_size=49408))
NAMES = ['cat', 'cup', 'clock']
PHOTO_LABELS = {'chelsea.jpg': 0, 'coffee.jpg': 1, 'clock_motion.jpg': 2,
                'rocket.jpg': 0, 'camera.jpg': 1}
# hand-made boxes (original pixel frame); coffee's second box and rocket's
# only box lie outside the centre crop (rocket: no token inside the box)
BOXES = {'chelsea.jpg': [(60, 20, 300, 240)],
         'coffee.jpg': [(100, 40, 300, 200), (10, 10, 40, 40)],
         'clock_motion.jpg': [(96, 72, 288, 216)],
         'rocket.jpg': [(0, 0, 20, 20)],
         'camera.jpg': [(0, 0, 384, 384)]}


def _tool():
    spec = importlib.util.spec_from_file_location('sc_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _tool()


@pytest.fixture(scope='module')
def clip_files(tmp_path_factory):
    import open_clip
    root = tmp_path_factory.mktemp('clip')
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.create_model('ViT-B-16', pretrained=None,
                                       **TEXT_CLIP)
    state = model.state_dict()
    full, visual = str(root / 'tiny_clip.pt'), str(root / 'tiny_visual.pt')
    torch.save(state, full)
    torch.save({k: v for k, v in state.items() if k.startswith('visual.')},
               visual)
    return full, visual


def _voc(path, image: str, boxes) -> None:
    w, h = Image.open(osp.join(PHOTOS, image)).size
    objs = ''.join(
        f'<object><name>x</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}'
        f'</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>'
        for b in boxes)
    path.write_text(f'<annotation><filename>{osp.splitext(image)[0]}'
                    f'</filename><size><width>{w}</width><height>{h}'
                    f'</height></size>{objs}</annotation>')


def _inputs(tmp_path, boxes=BOXES):
    lst = tmp_path / 'photos.txt'
    lst.write_text(''.join(f'{k} {v}\n' for k, v in PHOTO_LABELS.items()))
    names = tmp_path / 'names.txt'
    names.write_text('\n'.join(NAMES) + '\n')
    box_dir = tmp_path / 'boxes'
    box_dir.mkdir()
    for image in PHOTO_LABELS:  # every image needs its box file
        _voc(box_dir / (osp.splitext(image)[0] + '.xml'), image,
             boxes[image])
    return str(lst), str(names), str(box_dir)


def _args(clip, out, *extra, progress=False):
    return ['--model-name', 'ViT-B-16', '--pretrained', clip,
            '--model-kwargs', json.dumps(TEXT_CLIP), '--out-dir', str(out),
            *([] if progress else ['--no-progress']), *extra]


def _expected(clip_path: str, image: str, label: int, names, boxes):
    """Identity-schedule scores recomputed with open_clip directly."""
    import open_clip

    from mmdtm.analysis.voc_boxes import boxes_in_crop, token_mask
    from mmdtm.models.target_generators import CLIPTargetGenerator
    model = open_clip.create_model('ViT-B-16', pretrained=clip_path,
                                   **TEXT_CLIP).eval()
    tok = open_clip.get_tokenizer('ViT-B-16', context_length=16)
    with torch.no_grad():
        text = F.normalize(model.encode_text(
            tok([f'a photo of a {n}.' for n in names])), dim=-1)
    teacher = CLIPTargetGenerator('ViT-B-16', pretrained=clip_path,
                                  model_cfg=TEXT_CLIP)
    tokens = teacher_tokens(teacher, load_image(osp.join(PHOTOS, image), 64))
    pred = (F.normalize(tokens[0], dim=-1) @ text.t()).argmax(-1)
    grid = pred.view(4, 4)
    w, h = Image.open(osp.join(PHOTOS, image)).size
    inside = token_mask(boxes_in_crop(boxes, (w, h), 64), 64, 4)
    same = torch.cat([(grid[:, 1:] == grid[:, :-1]).flatten(),
                      (grid[1:] == grid[:-1]).flatten()]).float().mean()
    return dict(pred=pred,
                token_accuracy=float((pred[inside] == label).float().mean()),
                neighbour_agreement=float(same),
                vote=int(torch.bincount(pred, minlength=3).argmax()))


def test_tool_on_the_shipped_photographs(tmp_path, clip_files, capsys):
    full, _ = clip_files
    lst, names, box_dir = _inputs(tmp_path)
    out = tmp_path / 'out'
    tool.main([lst, *_args(full, out, '--image-root', PHOTOS,
                           '--class-names', names, '--boxes',
                           box_dir, '--schedules', 'identity', '2x2', '4x2',
                           '--panel-size', '32')])
    printed = capsys.readouterr().out
    assert 'token acc' in printed and 'r=2 x 2' in printed
    report = json.loads((out / 'spatial_consistency.json').read_text())
    assert report['num_images'] == 5 and report['boxes'] is True
    assert report['schedules'] == ['identity', 'r=2 x 2', 'r=4 x 2']
    assert [e['label'] for e in report['images']] == list(
        PHOTO_LABELS.values())
    groups = [report['summary'][s]['groups'] for s in report['schedules']]
    assert groups == [16, 12, 8]  # 16 tokens, minus 2x2, minus 4x2 merges

    # identity scores of a boxed image, recomputed independently
    for idx, image in ((0, 'chelsea.jpg'), (1, 'coffee.jpg')):
        entry = report['images'][idx]
        exp = _expected(full, image, PHOTO_LABELS[image], NAMES,
                        BOXES[image])
        got = entry['scores']['identity']
        assert got['token_accuracy'] == pytest.approx(exp['token_accuracy'])
        assert got['neighbour_agreement'] == pytest.approx(
            exp['neighbour_agreement'])
        assert got['vote'] == exp['vote']
        assert got['correct'] == (exp['vote'] == PHOTO_LABELS[image])
    # no token of rocket lies in its box: no token accuracy for it
    assert report['images'][3]['tokens_in_box'] == 0
    assert report['images'][3]['scores']['identity']['token_accuracy'] is None
    # the summary is the mean over images (over scored ones for tokens)
    for name, row in report['summary'].items():
        vals = [e['scores'][name]['token_accuracy']
                for e in report['images']]
        assert row['images_scored'] == 4
        assert row['token_accuracy'] == pytest.approx(
            np.mean([v for v in vals if v is not None]))
        votes = [e['scores'][name]['correct'] for e in report['images']]
        assert row['image_accuracy'] == pytest.approx(np.mean(votes))
    # random weights, three classes: not every token right, not every wrong
    ident = [e['scores']['identity']['token_accuracy']
             for e in report['images']]
    assert 0 < report['summary']['identity']['token_accuracy'] < 1, ident

    # the picture: 5 rows x 3 schedules, first panel coloured by correctness
    png = np.asarray(Image.open(out / 'spatial_consistency.png').convert(
        'RGB')).astype(np.float32)
    assert png.shape[:2] == probe_grid_size(5, 3, 32)[::-1]
    exp = _expected(full, 'camera.jpg', 1, NAMES, BOXES['camera.jpg'])
    from mmdtm.analysis.consistency_vis import HEADER, PAD, TITLE
    top = PAD + 4 * (TITLE + HEADER + 32 + PAD) + TITLE + HEADER
    panel = png[top:top + 32, PAD:PAD + 32]
    base = np.asarray(load_image(osp.join(PHOTOS, 'camera.jpg'), 64).resize(
        (32, 32), Image.BICUBIC), np.float32)
    ok = (exp['pred'] == 1).numpy().reshape(4, 4, 1)
    colour = np.where(ok, CORRECT, WRONG).repeat(8, 0).repeat(8, 1)
    # each cell's interior (class borders and the box outline lie on cell
    # edges) is the correctness colour over the image
    assert tuple(panel[0, 16].astype(int)) == BOX_COLOUR
    expected = (1 - ALPHA) * base + ALPHA * colour
    for y in range(4):
        for x in range(4):
            inner = np.s_[8 * y + 2:8 * y + 6, 8 * x + 2:8 * x + 6]
            np.testing.assert_allclose(panel[inner], expected[inner],
                                       atol=0.51)


def test_default_imagenet_names_and_shipped_labels(tmp_path, clip_files,
                                                   capsys):
    full, _ = clip_files
    report = tool.main([osp.join(PHOTOS, 'imagenet_labels.txt'),
                        *_args(full, tmp_path, '--schedules', 'identity',
                               '--vis-num', '0', progress=True)])
    assert '5/5' in capsys.readouterr().err  # the progress bar
    assert report['num_classes'] == 1000
    assert [e['class_name'] for e in report['images']] == [
        'tabby', 'cup', 'wall clock', 'missile', 'tripod']
    assert not (tmp_path / 'spatial_consistency.png').exists()


def test_errors_name_the_problem(tmp_path, clip_files):
    full, visual = clip_files
    lst, names, box_dir = _inputs(tmp_path)
    with pytest.raises(NoTextTowerError, match='tiny_visual.pt.* holds no '
                       'text tower'):
        tool.main([lst, *_args(visual, tmp_path / 'o1', '--image-root',
                               PHOTOS, '--class-names', names)])
    # a box file of another size
    _voc(tmp_path / 'boxes' / 'coffee.xml', 'chelsea.jpg', [(1, 1, 9, 9)])
    xml = (tmp_path / 'boxes' / 'coffee.xml').read_text().replace(
        '<filename>chelsea', '<filename>coffee')
    (tmp_path / 'boxes' / 'coffee.xml').write_text(xml)
    with pytest.raises(BoxFileError, match=r'coffee\.xml records a .* image '
                       r'but .*coffee\.jpg is'):
        tool.main([lst, *_args(full, tmp_path / 'o2', '--image-root',
                               PHOTOS, '--class-names', names, '--boxes',
                               box_dir)])
    with pytest.raises(ValueError, match=r'label 281 of .*chelsea\.jpg is not'
                       r' covered by .*names\.txt \(3 names'):
        tool.main([osp.join(PHOTOS, 'imagenet_labels.txt'),
                   *_args(full, tmp_path / 'o3', '--class-names', names)])


def test_scoring_and_picture_apart(tmp_path, clip_files):
    """score_probe scores without drawing; probe_picture draws what it
    kept; together they are run_probe."""
    from mmdtm.analysis import probe_picture, run_probe, score_probe
    from mmdtm.analysis.probe_data import read_samples
    from mmdtm.models.target_generators import CLIPTargetGenerator
    from mmdtm.visualization.morph_vis import parse_schedule
    lst, _, box_dir = _inputs(tmp_path)
    samples = read_samples(lst, NAMES, PHOTOS, 'NAMES')
    teacher = CLIPTargetGenerator('ViT-B-16', pretrained=clip_files[0],
                                  model_cfg=TEXT_CLIP)
    text = F.normalize(torch.randn(3, 32), dim=-1)
    schedules = [parse_schedule(s) for s in ('identity', '4x2')]
    kwargs = dict(boxes_dir=box_dir, progress=False)
    report, shown = score_probe(teacher, text, samples, NAMES, schedules,
                                keep=0, **kwargs)
    assert shown == [] and probe_picture(shown, schedules, 4) == (None, [])
    assert report['num_images'] == len(PHOTO_LABELS)
    kept, shown = score_probe(teacher, text, samples, NAMES, schedules,
                              keep=2, **kwargs)
    assert kept == report and [s.label for s in shown] == [0, 1]
    picture, panels = probe_picture(shown, schedules, 4, panel_size=64)
    whole, whole_picture, whole_panels = run_probe(
        teacher, text, samples, NAMES, schedules, vis_num=2, panel_size=64,
        **kwargs)
    assert whole == report and whole_picture.size == picture.size
    assert np.array_equal(np.asarray(whole_picture), np.asarray(picture))
    assert len(panels) == len(whole_panels) == 2 * len(schedules)
