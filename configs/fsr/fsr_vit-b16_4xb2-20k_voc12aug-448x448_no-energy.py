# FSR without the dense energy regulariser of the authors' training step
# (`loss_reg`, weight 0.05), for the ablation: the paper does not mention
# the regulariser, so this is also what its text describes for the loss.
_base_ = ['./fsr_vit-b16_4xb2-20k_voc12aug-448x448.py']
model = dict(energy_loss=None)
