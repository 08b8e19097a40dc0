"""The real stack is importable, and mmcv's compiled ops run on CPU."""
import importlib.metadata as md

import torch


def test_pinned_stack_imports():
    import mmcv
    import mmengine
    import mmpretrain.models  # noqa: F401
    import mmseg.models  # noqa: F401  (needs mmcv built with ops)
    import open_clip

    import mmdtm
    assert mmdtm.__version__
    assert torch.__version__.startswith('2.14.1')
    assert mmengine.__version__ == '0.10.7'
    assert mmcv.__version__ == '2.1.0'
    assert md.version('mmpretrain') == '1.2.0'
    assert md.version('mmsegmentation') == '1.2.2'
    assert open_clip.__version__ == '3.3.0'


def test_mmcv_compiled_ops_run_on_cpu():
    from mmcv.ops import nms, point_sample, roi_align
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.],
                          [50., 50., 60., 60.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    _, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    feats = torch.arange(16.).view(1, 1, 4, 4)
    rois = torch.tensor([[0., 0., 0., 4., 4.]])
    pooled = roi_align(feats, rois, (1, 1), 1.0, 2, 'avg', True)
    assert pooled.shape == (1, 1, 1, 1)
    sampled = point_sample(feats, torch.tensor([[[0.5, 0.5]]]))
    assert torch.allclose(sampled.flatten(), feats.mean().view(1))
