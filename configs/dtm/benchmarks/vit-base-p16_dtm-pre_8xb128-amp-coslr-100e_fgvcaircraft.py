# FGVC-Aircraft (variants) fine-tuning of a DTM ViT-B/16 (100 classes,
# MMPretrain's FGVCAircraft dataset, 'trainval' to train, 'test' to test):
# the ImageNet-1K fine-tuning recipe, inherited unchanged from
# vit-base-p16_dtm-pre_8xb128-amp-coslr-100e_in1k.py (model, augmentation,
# optimizer, layer decay, schedule, converted backbone); only the number of
# classes and the data change. Sources of every number: configs/dtm/README.md.
_base_ = ['./vit-base-p16_dtm-pre_8xb128-amp-coslr-100e_in1k.py']

num_classes = 100
data_root = 'data/fgvc-aircraft-2013b'
model = dict(
    data_preprocessor=dict(num_classes=num_classes),
    head=dict(num_classes=num_classes))

train_dataloader = dict(
    dataset=dict(type='FGVCAircraft', data_root=data_root, split='trainval'))
val_dataloader = dict(
    dataset=dict(type='FGVCAircraft', data_root=data_root, split='test'))
test_dataloader = val_dataloader
