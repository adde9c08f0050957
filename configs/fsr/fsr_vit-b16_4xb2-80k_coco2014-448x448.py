# FSR, ViT-B/16, 4 GPUs x 2 images, 80k iterations, COCO 2014, 448 crops:
# what the authors' train_coco.py computes. Paper: 45.4 mIoU on COCO val.
# Staged losses: classification + FSR first, the decoder (and the energy
# term) from 10% (8k), the affinity loss from 15% (12k); foreground pseudo
# labels above 0.65, CAMs scored at 0.45.
_base_ = [
    '../_base_/models/fsr_vit-b16.py',
    '../_base_/datasets/coco2014_wsss.py',
    'mmseg::_base_/default_runtime.py',
    '../_base_/schedules/fsr_80k.py',
    '../_base_/tta/fsr_tta-crf.py',
]
tta_model = {{_base_.fsr_tta_model}}
tta_pipeline = {{_base_.fsr_tta_pipeline}}
# the two-view training samples carry no pixel labels: browse_dataset.py
# shows them as they are (mmseg's visualiser would blend their all-ignore
# placeholder mask in at alpha 0.8)
visualizer = dict(type='WSSSLocalVisualizer')
model = dict(
    decode_head=dict(num_classes=81),
    pseudo_labeller=dict(high_thr=0.65, low_thr=0.25, eval_bg_thr=0.45),
    loss_start_iters=dict(seg=0.1, aff=0.15, fsr=0))
