# Table 4 "cer.FSR (MCA) only": L_c through masked cross-attention, no L_u.
# Paper: 75.2 pseudo-label / 73.3 decoder mIoU, VOC val.
_base_ = ['../fsr_vit-b16_4xb2-20k_voc12aug-448x448.py']
model = dict(uncertain_loss=None)
