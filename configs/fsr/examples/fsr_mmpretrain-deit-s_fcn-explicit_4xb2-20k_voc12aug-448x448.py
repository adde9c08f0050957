# Example: every FSR part spelled out on a non-paper segmentor, to show how
# FSR mixes into other models. The segmentor is "DeiT-S (mmpretrain) + stock
# mmseg FCNHead"; FSR adds, on top of the single-stage WSSS parts (CAM head,
# pseudo labels, affinity loss):
#   mask_neck         UncertaintyMaskingNeck: picks uncertain tokens of view 2
#   aggregation_head  MCAAggregationHead + DINOProjector: aggregates tokens
#   uncertain_loss    FSRUncertainLoss (Eq. 8) on the masked tokens
#   certain_loss      FSRCertainLoss (Eq. 9) on the aggregated token
#   custom_hooks      FSRTeacherHook: EMA teacher of backbone + aggregation
# Drop the four model keys (and the hook) and it is the ToCo-style baseline.
# Not a paper setting: no reference numbers. See docs/extending.md.
_base_ = ['../fsr_vit-b16_4xb2-20k_voc12aug-448x448.py']

num_classes = 21
embed_dims = 384  # DeiT-S
patch_size = 16
projector_dims = 4096
deit_checkpoint = 'https://download.openmmlab.com/mmclassification/v0/deit/deit-small_pt-4xb256_in1k_20220218-9425b9bb.pth'  # noqa
model = dict(
    _delete_=True,
    type='FSRSegmentor',
    data_preprocessor=dict(
        type='WSSSDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        test_cfg=dict(size_divisor=patch_size)),
    # --- any backbone with forward, forward_with_tokens, normalize_tokens,
    # cls_token and patch_size (docs/extending.md)
    backbone=dict(
        type='MMPretrainViTAdapter',
        arch='deit-small',
        img_size=448,
        patch_size=patch_size,
        out_indices=(9, 11),
        drop_path_rate=0.1,
        init_cfg=dict(
            type='Pretrained', checkpoint=deit_checkpoint,
            prefix='backbone.')),
    # --- single-stage WSSS parts
    cam_head=dict(
        type='CAMHead', in_channels=embed_dims, num_classes=num_classes - 1),
    decode_head=dict(
        type='FCNHead',
        in_channels=embed_dims,
        in_index=-1,
        channels=256,
        num_convs=2,
        kernel_size=3,
        dilation=6,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm_cfg=None,
        align_corners=False,
        loss_decode=dict(type='BgFgCrossEntropyLoss', loss_weight=0.1)),
    affinity_loss=dict(type='PatchTokenContrastLoss', loss_weight=0.2),
    pseudo_labeller=dict(
        type='CAMPseudoLabeller',
        cam_scales=(1.0, 0.5, 1.5),
        high_thr=0.7,
        low_thr=0.25,
        eval_bg_thr=0.5,
        par=dict(dilations=(1, 2, 4, 8, 12, 24), num_iter=10),
        par_down_scale=2),
    loss_start_iters=dict(seg=2000, aff=0, fsr=0),
    # --- feature self-reinforcement
    mask_neck=dict(
        type='UncertaintyMaskingNeck',
        mask_ratio=0.4,
        uncertain_range=(0.2, 0.7),
        strategy='uncertain',
        patch_size=patch_size,
        block_size=4 * patch_size,
        random_warmup_ratio=0.2,
        block_score='nearest',
        num_masked_rounding='ceil'),
    aggregation_head=dict(
        type='MCAAggregationHead',
        in_channels=embed_dims,
        num_blocks=2,
        num_heads=6,
        aggregation='MCA',
        mask_attention=False,
        projector=dict(
            type='DINOProjector',
            in_channels=embed_dims,
            hidden_channels=2048,
            bottleneck_channels=256,
            out_channels=projector_dims)),
    uncertain_loss=dict(
        type='FSRUncertainLoss', out_channels=projector_dims,
        loss_weight=0.1),
    certain_loss=dict(
        type='FSRCertainLoss', out_channels=projector_dims, loss_weight=0.1),
    mask_cam_source='multi_scale',
    stochastic_targets=True,
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
custom_hooks = [dict(type='FSRTeacherHook', momentum=0.9995, end_momentum=1.0)]
