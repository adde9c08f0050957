# The COCO recipe (4 GPUs x 2 images, 80k steps) on one GPU: 8 images per
# step. As fsr_vit-b16_1xb8-20k_voc12aug-448x448.py: the same steps, lr,
# teacher and centres; the affinity and bg/fg decoder losses pool over 8
# images instead of 2.
_base_ = ['./fsr_vit-b16_4xb2-80k_coco2014-448x448.py']

train_dataloader = dict(batch_size=8)
