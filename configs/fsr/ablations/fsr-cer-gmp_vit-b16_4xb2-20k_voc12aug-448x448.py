# Table 4 "cer.FSR with GMP": L_c with the class token replaced by global
# max pooling over unmasked tokens.
# Paper: 71.8 / 70.0 pseudo-label / decoder mIoU, VOC val.
_base_ = ['./fsr-cer_vit-b16_4xb2-20k_voc12aug-448x448.py']
model = dict(aggregation_head=dict(aggregation='GMP'))
