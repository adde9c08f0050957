# The paper recipe (4 GPUs x 2 images, 20k steps) on two GPUs, step for
# step: each optimiser step accumulates 2 micro-batches of 2 images per GPU
# (AccumulatingIterBasedTrainLoop; gradients and centre statistics are
# all-reduced once per step), so a step sees 8 images, as on 4 GPUs.
_base_ = ['./fsr_vit-b16_4xb2-20k_voc12aug-448x448.py']

optim_wrapper = dict(accumulative_counts=2)
train_cfg = dict(type='AccumulatingIterBasedTrainLoop')
