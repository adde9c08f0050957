# FSR, ViT-B/16, 4 GPUs x 2 images, 20k iterations, VOC 2012 aug, 448 crops:
# what the authors' train_voc.py computes. Paper: 75.7 mIoU on VOC val with
# the multi-scale + flip + CRF test (`tools/test.py ... --tta`).
_base_ = [
    '../_base_/models/fsr_vit-b16.py',
    '../_base_/datasets/voc12aug_wsss.py',
    'mmseg::_base_/default_runtime.py',
    '../_base_/schedules/fsr_20k.py',
    '../_base_/tta/fsr_tta-crf.py',
]
tta_model = {{_base_.fsr_tta_model}}
tta_pipeline = {{_base_.fsr_tta_pipeline}}
# the two-view training samples carry no pixel labels: browse_dataset.py
# shows them as they are (mmseg's visualiser would blend their all-ignore
# placeholder mask in at alpha 0.8)
visualizer = dict(type='WSSSLocalVisualizer')
