# The paper's test of FSR on VOC: native resolution at scales 1.0 / 1.25 /
# 1.5, each with its horizontal flip, then a dense CRF (Table 1: 75.7 mIoU).
# Train with the base config, then test with --tta:
#   python tools/test.py configs/fsr/fsr_vit-b16_4xb2-20k_voc12aug-448x448_tta-crf.py \
#       work_dirs/fsr_vit-b16_4xb2-20k_voc12aug-448x448/iter_20000.pth --tta
# Without --tta: single scale, no CRF, like the base config but in batches of
# crf_workers images (padded to the largest; use the base config for batch 1).
_base_ = ['./fsr_vit-b16_4xb2-20k_voc12aug-448x448.py']

# The first ratio is the view whose meta information (and CAM outputs) the
# merged prediction keeps: leave 1.0 first.
img_ratios = [1.0, 1.25, 1.5]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(type='Resize', scale_factor=r, keep_ratio=True)
                for r in img_ratios
            ],
            [
                dict(type='RandomFlip', prob=0., direction='horizontal'),
                dict(type='RandomFlip', prob=1., direction='horizontal')
            ],
            # ground truth at the original size: after Resize, not resized
            [dict(type='LoadAnnotations')],
            [dict(type='PackSegInputs')],
        ])
]
crf_workers = 4
tta_model = dict(
    type='CRFSegTTAModel',
    # reference: flipped logits summed, scales fused by element-wise max
    merge='max',
    crf=True,
    crf_cfg=dict(
        num_iters=10,
        gaussian_sxy=1,
        gaussian_compat=1,
        bilateral_sxy=121,
        bilateral_srgb=5,
        bilateral_compat=4),
    crf_workers=crf_workers)
# With --tta images are inferred one at a time whatever the batch size; a
# batch of crf_workers images keeps every CRF worker busy while the next
# image runs.
test_dataloader = dict(batch_size=crf_workers)
