# Oxford Flowers-102 fine-tuning of a DTM ViT-B/16 (102 classes, MMPretrain's
# Flowers102 dataset, 'trainval' to train, 'test' to test): the ImageNet-1K
# fine-tuning recipe, inherited unchanged from
# vit-base-p16_dtm-pre_8xb128-amp-coslr-100e_in1k.py (model, augmentation,
# optimizer, layer decay, schedule, converted backbone); only the number of
# classes and the data change. Sources of every number: configs/dtm/README.md.
# MMPretrain's Flowers102 reads .mat files with mat4py: pip install mat4py.
_base_ = ['./vit-base-p16_dtm-pre_8xb128-amp-coslr-100e_in1k.py']

num_classes = 102
data_root = 'data/Flowers102'
model = dict(
    data_preprocessor=dict(num_classes=num_classes),
    head=dict(num_classes=num_classes))

train_dataloader = dict(
    dataset=dict(type='Flowers102', data_root=data_root, split='trainval'))
val_dataloader = dict(
    dataset=dict(type='Flowers102', data_root=data_root, split='test'))
test_dataloader = val_dataloader
