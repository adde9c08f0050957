# Baseline with FSR switched off: the ToCo-style single-stage framework
# (classification, CAM -> PAR pseudo labels, affinity, decoder).
# Paper (Table 4, "no FSR", ToCo's own result): 71.1 pseudo-label / 67.9
# decoder mIoU, VOC val. As ToCo's ViT, the class token runs through the
# layers; ToCo's class-token contrast on local crops is not part of it.
_base_ = ['./fsr_vit-b16_4xb2-20k_voc12aug-448x448.py']
# WSSSSegmentor: the paper model's parts less FSR's.
_fsr_only = ('type', 'mask_neck', 'aggregation_head', 'uncertain_loss',
             'certain_loss', 'mask_cam_source', 'teacher_cfg')
model = dict(
    _delete_=True,
    type='WSSSSegmentor',
    **{k: v for k, v in _base_.model.items() if k not in _fsr_only})
model['backbone']['with_cls_token'] = True
model['loss_start_iters'] = dict(seg=0.1, aff=0)
