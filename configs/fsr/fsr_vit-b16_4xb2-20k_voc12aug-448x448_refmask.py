# The reference code's masking instead of the paper's: 64x64-pixel blocks
# (4x4 patches), purely random for the first 20% of iterations.
_base_ = ['./fsr_vit-b16_4xb2-20k_voc12aug-448x448.py']
model = dict(mask_neck=dict(block_size=64, random_warmup_ratio=0.2))
