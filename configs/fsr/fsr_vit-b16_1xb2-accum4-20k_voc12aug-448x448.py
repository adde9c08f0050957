# The paper recipe (4 GPUs x 2 images, 20k steps) on one GPU, step for step:
# each of the 20k optimiser steps accumulates 4 micro-batches of 2 images
# (AccumulatingIterBasedTrainLoop), the teacher and the DINO centres move
# once per step with all 8 images, every schedule counts steps.
_base_ = ['./fsr_vit-b16_4xb2-20k_voc12aug-448x448.py']

optim_wrapper = dict(accumulative_counts=4)
train_cfg = dict(type='AccumulatingIterBasedTrainLoop')
