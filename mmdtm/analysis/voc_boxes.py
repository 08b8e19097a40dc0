"""Object boxes in Pascal VOC XML (the format of ImageNet's validation
boxes), mapped onto the probe's centre crop and its patch grid."""
import os.path as osp
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from mmdtm.utils.morph_vis import crop_geometry

Box = Tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


class BoxFileError(ValueError):
    """A box file is malformed or does not belong to its image."""


@dataclass(frozen=True)
class VOCBoxes:
    """The boxes of one image: ``filename`` and image ``size`` as the XML
    records them, and one ``(x0, y0, x1, y1)`` per object."""
    path: str
    filename: str
    size: Tuple[int, int]  # width, height
    boxes: Tuple[Box, ...]
    names: Tuple[str, ...]


def _text(node: ET.Element, tag: str, path: str, where: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise BoxFileError(f'{path}: missing <{tag}> in {where}')
    return child.text.strip()


def _number(node: ET.Element, tag: str, path: str, where: str) -> float:
    text = _text(node, tag, path, where)
    try:
        return float(text)
    except ValueError:
        raise BoxFileError(f'{path}: <{tag}> in {where} is not a number: '
                           f'{text!r}') from None


def read_voc_xml(path: str) -> VOCBoxes:
    """Parse a Pascal VOC annotation (``<annotation>`` with ``<filename>``,
    ``<size><width><height>`` and ``<object><name><bndbox>...``)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'box file not found: {path}')
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise BoxFileError(f'{path}: not valid XML ({err})') from err
    if root.tag != 'annotation':
        raise BoxFileError(f'{path}: root element is <{root.tag}>, not '
                           f'<annotation> (Pascal VOC)')
    filename = _text(root, 'filename', path, '<annotation>')
    size = root.find('size')
    if size is None:
        raise BoxFileError(f'{path}: missing <size> in <annotation>')
    wh = (int(_number(size, 'width', path, '<size>')),
          int(_number(size, 'height', path, '<size>')))
    boxes, names = [], []
    for i, obj in enumerate(root.findall('object')):
        where = f'<object> #{i}'
        bnd = obj.find('bndbox')
        if bnd is None:
            raise BoxFileError(f'{path}: missing <bndbox> in {where}')
        box = tuple(_number(bnd, t, path, f'{where} <bndbox>')
                    for t in ('xmin', 'ymin', 'xmax', 'ymax'))
        if not (0 <= box[0] < box[2] <= wh[0] + 1 and
                0 <= box[1] < box[3] <= wh[1] + 1):
            raise BoxFileError(f'{path}: {where} box {box} is empty or '
                               f'outside the {wh[0]}x{wh[1]} image')
        boxes.append(box)
        names.append(_text(obj, 'name', path, where))
    if not boxes:
        raise BoxFileError(f'{path}: no <object> with a <bndbox>')
    return VOCBoxes(path, filename, wh, tuple(boxes), tuple(names))


def check_belongs(ann: VOCBoxes, image_path: str,
                  image_size: Tuple[int, int]) -> None:
    """Raise :class:`BoxFileError` unless ``ann`` describes this image: same
    file stem (ImageNet's XML ``<filename>`` has no extension) and the same
    width and height."""
    stem = osp.splitext(osp.basename(image_path))[0]
    if osp.splitext(ann.filename)[0] != stem:
        raise BoxFileError(f'{ann.path} describes {ann.filename!r}, not the '
                           f'image {image_path}')
    if tuple(ann.size) != tuple(image_size):
        raise BoxFileError(
            f'{ann.path} records a {ann.size[0]}x{ann.size[1]} image but '
            f'{image_path} is {image_size[0]}x{image_size[1]}')


def boxes_in_crop(boxes: Sequence[Box], image_size: Tuple[int, int],
                  size: int) -> List[Box]:
    """The boxes in the pixel frame of the ``size`` x ``size`` centre crop
    that :func:`mmdtm.utils.morph_vis.load_image` takes (clipped to it;
    boxes wholly outside are dropped)."""
    width, height = image_size
    w, h, left, top = crop_geometry(width, height, size)
    sx, sy = w / width, h / height
    out = []
    for x0, y0, x1, y1 in boxes:
        box = (min(max(x0 * sx - left, 0), size),
               min(max(y0 * sy - top, 0), size),
               min(max(x1 * sx - left, 0), size),
               min(max(y1 * sy - top, 0), size))
        if box[2] > box[0] and box[3] > box[1]:
            out.append(box)
    return out


def token_mask(boxes: Sequence[Box], size: int, grid: int) -> Tensor:
    """(grid * grid,) bool in raster order: the patch's centre lies inside
    at least one box (crop pixel frame)."""
    centres = (torch.arange(grid, dtype=torch.float64) + 0.5) * size / grid
    ys, xs = torch.meshgrid(centres, centres, indexing='ij')
    inside = torch.zeros(grid, grid, dtype=torch.bool)
    for x0, y0, x1, y1 in boxes:
        inside |= (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
    return inside.flatten()
