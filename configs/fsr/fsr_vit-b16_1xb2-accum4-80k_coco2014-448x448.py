# The COCO recipe (4 GPUs x 2 images, 80k steps) on one GPU, step for step:
# 4 accumulated micro-batches of 2 images per optimiser step
# (AccumulatingIterBasedTrainLoop).
_base_ = ['./fsr_vit-b16_4xb2-80k_coco2014-448x448.py']

optim_wrapper = dict(accumulative_counts=4)
train_cfg = dict(type='AccumulatingIterBasedTrainLoop')
