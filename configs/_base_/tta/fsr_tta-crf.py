# The paper's test recipe, as in the authors' infer_voc.py: native resolution
# at scales 1.0 / 1.25 / 1.5, each with its horizontal flip; flipped logits
# summed, scales fused by element-wise max; then a dense CRF on the softmax
# (10 iterations, Gaussian 1 / 1, bilateral 121 / 5 / 4).
# The names are this piece's own, so it composes with any config; a config
# switches --tta to it with
#   tta_model = {{_base_.fsr_tta_model}}
#   tta_pipeline = {{_base_.fsr_tta_pipeline}}
# mmseg's mean fusion without CRF: tta_model.merge='mean', tta_model.crf=False.
fsr_tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            # the first scale's view keeps its meta and CAM outputs
            [
                dict(type='Resize', scale_factor=r, keep_ratio=True)
                for r in (1.0, 1.25, 1.5)
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
fsr_tta_model = dict(
    type='CRFSegTTAModel',
    merge='max',
    crf=True,
    crf_cfg=dict(
        num_iters=10,
        gaussian_sxy=1,
        gaussian_compat=1,
        bilateral_sxy=121,
        bilateral_srgb=5,
        bilateral_compat=4),
    crf_workers=4)
