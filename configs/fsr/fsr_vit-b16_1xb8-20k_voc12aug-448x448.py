# The paper recipe (4 GPUs x 2 images, 20k steps) on one GPU: 8 images per
# step, the same 20k steps, lr, teacher and DINO centres. Needs about
# 4x the memory of one 4xb2 GPU (README, "How many GPUs"). Differs from
# 4xb2 only in the two losses that pool over a GPU's batch (the affinity
# pairs, the decoder's bg/fg pixel means): here over 8 images instead of 2;
# the accum configs are step for step the same as 4xb2.
_base_ = ['./fsr_vit-b16_4xb2-20k_voc12aug-448x448.py']

train_dataloader = dict(batch_size=8)
