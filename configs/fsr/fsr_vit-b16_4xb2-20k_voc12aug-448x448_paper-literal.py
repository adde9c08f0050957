# FSR as the paper's text describes it, where it differs from the authors'
# code (the default of every other config; see the difference table in
# configs/fsr/README.md): single-patch masking from the first iteration with
# k = floor(HW r) and the per-token CAM score, masked tokens left out of the
# aggregation softmax (Eq. 7), and no dense energy regulariser.
_base_ = ['./fsr_vit-b16_4xb2-20k_voc12aug-448x448.py']
model = dict(
    energy_loss=None,
    mask_neck=dict(
        block_size=16,
        random_warmup_ratio=0.0,
        block_score='area',
        num_masked_rounding='floor'),
    aggregation_head=dict(mask_attention=True))
