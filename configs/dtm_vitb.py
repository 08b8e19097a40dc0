# Alias: DTM ViT-B/16, 300 epochs, ImageNet-1K (the paper's main setting).
_base_ = ['./dtm/dtm_beit-base-p16_8xb256-amp-coslr-300e_in1k.py']
