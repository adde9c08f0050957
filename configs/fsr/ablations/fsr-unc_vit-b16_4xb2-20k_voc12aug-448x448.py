# Table 3 "uncertain" / Table 4 "unc.FSR only": L_u on uncertainty-masked
# tokens, no L_c. Paper: 74.4 pseudo-label / 72.5 decoder mIoU, VOC val.
_base_ = ['../fsr_vit-b16_4xb2-20k_voc12aug-448x448.py']
model = dict(certain_loss=None)
