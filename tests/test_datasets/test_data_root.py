"""check_data_roots: a missing data folder names the config key to set."""
import pytest
from mmengine.config import Config

from mmdtm.datasets import check_data_roots


def loader(**dataset):
    return dict(train_dataloader=dict(batch_size=2, dataset=dataset))


def test_missing_folders_name_the_key_and_the_docs(tmp_path):
    (tmp_path / 'imagenet' / 'train').mkdir(parents=True)
    root = str(tmp_path / 'imagenet')
    check_data_roots(Config(loader(type='ImageNet', data_root=root,
                                   split='train')))
    check_data_roots(Config(loader(data_root='s3://bucket/imagenet')))
    check_data_roots(Config(dict(train_dataloader=None)))

    missing = str(tmp_path / 'nowhere')
    with pytest.raises(FileNotFoundError) as info:
        check_data_roots(Config(loader(type='ImageNet', data_root=missing,
                                       split='train')))
    message = str(info.value)
    assert message.startswith(
        f"train_dataloader.dataset.data_root: no such folder '{missing}' "
        f'(the ImageNet data;')
    assert f'set --cfg-options train_dataloader.dataset.data_root=' \
        f'/path/to/data; README.md, section "Training on ImageNet", ' \
        f'explains the layout' in message

    with pytest.raises(FileNotFoundError, match=r"\.split: no such folder "
                       r"'.*imagenet/val'"):
        check_data_roots(Config(loader(type='ImageNet', data_root=root,
                                       split='val')))
    with pytest.raises(FileNotFoundError,
                       match=r'^train_dataloader\.dataset\.dataset\.'
                       r'data_prefix: no such folder'):
        check_data_roots(Config(loader(
            type='RepeatDataset', times=2,
            dataset=dict(data_root=root, data_prefix=dict(img_path='x/')))))
    with pytest.raises(FileNotFoundError, match=r'^test_dataloader'):
        check_data_roots(Config(dict(test_dataloader=dict(dataset=dict(
            data_root=missing)))), ('test_dataloader',))
