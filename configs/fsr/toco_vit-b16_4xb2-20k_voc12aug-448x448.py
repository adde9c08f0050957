# Baseline with FSR switched off: the ToCo-style single-stage framework
# (classification, CAM -> PAR pseudo labels, affinity, decoder).
# Paper (Table 4, "no FSR"): 71.1 pseudo-label / 67.9 decoder mIoU, VOC val.
_base_ = ['./fsr_vit-b16_4xb2-20k_voc12aug-448x448.py']
model = dict(
    mask_neck=None,
    aggregation_head=None,
    uncertain_loss=None,
    certain_loss=None)
custom_hooks = []  # no teacher to keep
