# Baseline with FSR switched off: the ToCo-style single-stage framework
# (classification, CAM -> PAR pseudo labels, affinity, decoder).
# Paper (Table 4, "no FSR", ToCo's own result): 71.1 pseudo-label / 67.9
# decoder mIoU, VOC val. As ToCo's ViT, the class token runs through the
# layers; ToCo's class-token contrast on local crops is not part of it.
_base_ = ['./fsr_vit-b16_4xb2-20k_voc12aug-448x448.py']
model = dict(
    backbone=dict(with_cls_token=True),
    mask_neck=None,
    aggregation_head=None,
    uncertain_loss=None,
    certain_loss=None)
