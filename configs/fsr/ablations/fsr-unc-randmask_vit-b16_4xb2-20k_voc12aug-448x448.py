# Table 3 "random": unc.FSR only with purely random masking (r = 0.4).
# Paper: 74.2 pseudo-label / 72.3 decoder mIoU, VOC val.
_base_ = ['./fsr-unc_vit-b16_4xb2-20k_voc12aug-448x448.py']
model = dict(mask_neck=dict(strategy='random'))
