"""Checkpoint URLs: a clear offline error naming the URL and where to put
the file; a file put there is then used without network. (MMEngine's
loader is replaced only by the explicit ``setup_checkpoint_loading()``.)"""
from urllib.error import URLError

import pytest
import torch
from mmengine.model import BaseModule
from mmengine.runner import load_checkpoint

from mmdtm.checkpoint import CheckpointDownloadError, url_cache_path

URL = 'http://127.0.0.1:9/dtm_toy_backbone.pth'  # port 9 (discard): refused


class Tiny(BaseModule):

    def __init__(self, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.fc = torch.nn.Linear(3, 2)


def test_unreachable_url_names_url_and_destination(tmp_path, monkeypatch,
                                                   checkpoint_loading):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    dest = url_cache_path(URL)
    assert dest == str(tmp_path / 'torch' / 'hub' / 'checkpoints' /
                       'dtm_toy_backbone.pth')
    with pytest.raises(CheckpointDownloadError) as info:
        load_checkpoint(Tiny(), URL, map_location='cpu')
    msg = str(info.value)
    assert URL in msg and dest in msg and 'Offline?' in msg
    # the exception type MMEngine's loader raises, for code that catches it
    assert isinstance(info.value, URLError) and isinstance(info.value,
                                                           OSError)
    assert isinstance(info.value.reason, OSError)

    # the same through init_cfg=dict(type='Pretrained', checkpoint=URL)
    model = Tiny(init_cfg=dict(type='Pretrained', checkpoint=URL))
    with pytest.raises(CheckpointDownloadError, match='dtm_toy_backbone'):
        model.init_weights()

    # put the file where the message says: it loads without network
    src = Tiny()
    torch.save({'state_dict': src.state_dict()}, dest)
    model = Tiny(init_cfg=dict(type='Pretrained', checkpoint=URL))
    model.init_weights()
    torch.testing.assert_close(model.fc.weight, src.fc.weight)
    # a local path works as well
    other = Tiny()
    load_checkpoint(other, dest, map_location='cpu')
    torch.testing.assert_close(other.fc.bias, src.fc.bias)
