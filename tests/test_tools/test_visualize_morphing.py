"""tools/visualize_morphing.py draws the partition bipartite_partition finds."""
import os.path as osp

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

from mmdtm.morphing import bipartite_partition
from mmdtm.visualization.morph_vis import (BORDER, Schedule, default_schedules,
                                   grid_size, load_image, palette,
                                   parse_schedule, teacher_tokens)

from ..conftest import REPO, TOY_CFG
from ._load import load_tool

vis = load_tool('visualize_morphing')
IMAGE = osp.join(REPO, 'demo', 'images', 'astronaut.jpg')


def _colours(img: np.ndarray) -> set:
    flat = img.reshape(-1, 3)
    return {tuple(c) for c in np.unique(flat, axis=0)} - {BORDER}


def test_grid_png_size_and_one_colour_per_group(tmp_path):
    out = str(tmp_path / 'm.png')
    canvas, panels = vis.main([
        IMAGE, IMAGE, '--config', TOY_CFG, '--pretrained', 'none',
        '--schedules', 'identity', '2x2', '4x2', '8x3',
        '--panel-size', '64', '--out', out])
    png = np.asarray(Image.open(out).convert('RGB'))
    grid, cell = 4, 16  # toy teacher: 64x64 images, 4x4 patches
    width, height = grid_size(2, 4, grid * cell)
    assert png.shape == (height, width, 3) == (
        2 * (30 + 2 * (64 + 6)) + 6, 6 + 4 * (64 + 6), 3)

    # the partitions the tool should have drawn, recomputed here
    teacher = vis.build_teacher(Config.fromfile(TOY_CFG), 'none')
    tokens = teacher_tokens(teacher, load_image(IMAGE, 64))
    expected = [bipartite_partition(tokens, r, k)[0].numpy()
                for r, k in ((0, 0), (2, 2), (4, 2), (8, 3))]
    counts = [int(g.max()) + 1 for g in expected]
    assert counts[0] == 16 and counts[1] == 12 and counts == sorted(
        counts, reverse=True) and counts[-1] < counts[-2]

    flat = [p for p in panels if p.flat]
    assert len(flat) == 8 and len(panels) == 16
    for i, panel in enumerate(flat):
        left, top, right, bottom = panel.box
        crop = png[top:bottom, left:right]
        groups = expected[i % 4]
        np.testing.assert_array_equal(panel.groups, groups)
        assert panel.num_groups == counts[i % 4]
        # distinct colours in the panel == number of groups
        assert len(_colours(crop)) == panel.num_groups
        # and the colours follow the partition: cell centres agree
        centre = crop[cell // 2::cell, cell // 2::cell].reshape(-1, 3)
        by_group = {}
        for gid, colour in zip(groups, map(tuple, centre)):
            assert by_group.setdefault(gid, colour) == colour
        assert len(set(by_group.values())) == panel.num_groups
        # borders are drawn between cells of different groups
        ids = groups.reshape(grid, grid)
        y = cell // 2
        for col in range(grid - 1):
            x = (col + 1) * cell  # first pixel column of the next cell
            is_border = tuple(crop[y, x]) == BORDER
            assert is_border == (ids[0, col] != ids[0, col + 1])
    # the tinted panels show the image, so they have many more colours
    tinted = [p for p in panels if not p.flat][0]
    left, top, right, bottom = tinted.box
    assert len(_colours(png[top:bottom, left:right])) > 50


def test_schedule_parsing_and_defaults():
    assert parse_schedule('identity') == Schedule(0, 0)
    assert parse_schedule('16x4') == Schedule(16, 4)
    assert Schedule(16, 4).name == 'r=16 x 4'
    with pytest.raises(ValueError, match="'16by4'"):
        parse_schedule('16by4')
    assert default_schedules(196) == [Schedule(0, 0), Schedule(16, 4),
                                      Schedule(49, 2), Schedule(90, 2)]
    pal = palette(300)
    assert len(np.unique(pal, axis=0)) == 300
    assert not (pal == np.array(BORDER)).all(1).any()


def test_missing_image_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.jpg'):
        vis.main([str(tmp_path / 'missing.jpg'), '--config', TOY_CFG])
