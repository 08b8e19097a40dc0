# iNaturalist 2018 fine-tuning of a DTM ViT-B/16 (8142 classes): the
# ImageNet-1K fine-tuning recipe, inherited unchanged from
# vit-base-p16_dtm-pre_8xb128-amp-coslr-100e_in1k.py (model, augmentation,
# optimizer, layer decay, schedule, converted backbone); only the number of
# classes and the data change. Sources of every number: configs/dtm/README.md.
#
# MMPretrain has no iNaturalist dataset: convert the official JSON files once,
#   python tools/dataset_converters/inat_to_mmpretrain.py \
#       data/inat2018/train2018.json data/inat2018/val2018.json \
#       data/inat2018/meta
# which writes meta/{train,val,classes}.txt for CustomDataset (the official
# validation set is the test set, as in every published iNaturalist result).
_base_ = ['./vit-base-p16_dtm-pre_8xb128-amp-coslr-100e_in1k.py']

num_classes = 8142
data_root = 'data/inat2018/'
model = dict(
    data_preprocessor=dict(num_classes=num_classes),
    head=dict(num_classes=num_classes))

train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='CustomDataset',
        data_root=data_root,
        ann_file='meta/train.txt',
        data_prefix='',
        classes=data_root + 'meta/classes.txt',
        pipeline={{_base_.train_pipeline}}))
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='CustomDataset',
        data_root=data_root,
        ann_file='meta/val.txt',
        data_prefix='',
        classes=data_root + 'meta/classes.txt',
        pipeline={{_base_.test_pipeline}}))
test_dataloader = val_dataloader
