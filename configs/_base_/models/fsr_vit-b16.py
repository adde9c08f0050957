# FSR on ViT-B/16 (Figure 2): the paper's model, hyper-parameters from the
# method sheet. `pretrain/vit-b16_in1k_jx_448.pth` is made by
# tools/model_converters/vit_to_fsr.py (see docs/dataset_prepare.md).
custom_imports = dict(imports=['mmseg_fsr'], allow_failed_imports=False)

num_classes = 21  # VOC: segmentation classes, background included
embed_dims = 768
projector_dims = 4096
data_preprocessor = dict(
    type='WSSSDataPreProcessor',
    # The authors' pipeline normalises with the ImageNet mean / std.
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    # inference at native resolution: pad to whole patches, cropped back.
    test_cfg=dict(size_divisor=16))
model = dict(
    type='FSRSegmentor',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='MaskableViT',
        img_size=(448, 448),
        patch_size=16,
        embed_dims=embed_dims,
        num_layers=12,
        num_heads=12,
        mlp_ratio=4,
        out_indices=(9, 11),  # auxiliary CAM on layer -3, final layer
        qkv_bias=True,
        patch_bias=True,  # timm's patch embedding has a bias
        drop_rate=0.0,
        drop_path_rate=0.1,
        # As the authors' ViT: the layers see patch tokens only; the class
        # token is the query of the aggregation head.
        with_cls_token=False,
        final_norm=True,
        norm_cfg=dict(type='LN', eps=1e-6),
        act_cfg=dict(type='GELU'),
        interpolate_mode='bicubic',
        init_cfg=dict(
            type='Pretrained', checkpoint='pretrain/vit-b16_in1k_jx_448.pth')),
    # foreground classifiers: num_classes - 1 outputs
    cam_head=dict(type='CAMHead', in_channels=embed_dims),
    decode_head=dict(
        type='LargeFOVHead',
        in_channels=embed_dims,
        in_index=-1,
        channels=512,
        dilation=5,
        dropout_ratio=0.0,
        num_classes=num_classes,
        align_corners=False,
        loss_decode=dict(type='BgFgCrossEntropyLoss', loss_weight=0.1)),
    affinity_loss=dict(type='PatchTokenContrastLoss', loss_weight=0.2),
    # the authors' dense CRF regulariser (w_reg), from the decoder's start
    energy_loss=dict(
        type='DenseEnergyLoss',
        loss_weight=0.05,
        energy_weight=1e-7,
        sigma_rgb=15,
        sigma_xy=100,
        scale_factor=0.5),
    mask_neck=dict(
        type='UncertaintyMaskingNeck',
        mask_ratio=0.4,
        uncertain_range=(0.2, 0.7),
        strategy='uncertain',
        # the authors' code: 64-px blocks, random for the first 20% of
        # iterations, k = ceil(N r), each block read at its top-left pixel
        # (the paper: single patches, no warm-up, floor; see the
        # _paper-literal config)
        block_size=64,
        random_warmup_ratio=0.2,
        block_score='nearest',
        num_masked_rounding='ceil'),
    aggregation_head=dict(
        type='MCAAggregationHead',
        in_channels=embed_dims,
        num_blocks=2,
        num_heads=12,
        aggregation='MCA',
        mask_attention=False,  # the paper's Eq. 7 masks the softmax
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
    pseudo_labeller=dict(
        type='CAMPseudoLabeller',
        cam_scales=(1.0, 0.5, 1.5),
        high_thr=0.7,
        low_thr=0.25,
        eval_bg_thr=0.5,  # CAMs scored as labels (VOC)
        par=dict(dilations=(1, 2, 4, 8, 12, 24), num_iter=10),
        par_down_scale=2),
    # first iteration (int) or fraction of the run (float): the decoder and
    # the energy term from 10% (2,000 of 20k iterations)
    loss_start_iters=dict(seg=0.1, aff=0, fsr=0),
    mask_cam_source='multi_scale',
    # EMA teacher momentum 0.9995 -> 1 (cosine over the optimiser steps);
    # the model moves the teacher itself once per step
    teacher_cfg=dict(momentum=0.9995, end_momentum=1.0),
    stochastic_targets=True,  # CAMs and teacher with drop path, as authors
    train_cfg=dict(),
    # CAM, auxiliary-CAM and PAR labels scored beside the decoder; an
    # image (or TTA view) beyond 4096 patch tokens (1024x1024 px at patch
    # 16; every VOC/COCO image and view is within) goes through 448-px
    # sliding windows, and its CAM pass is scaled down to the budget
    test_cfg=dict(
        mode='whole',
        output_cams=True,
        max_tokens=4096,
        crop_size=(448, 448),
        stride=(300, 300)))
# some losses start late and FSR parts may be switched off.
model_wrapper_cfg = dict(
    type='MMDistributedDataParallel', find_unused_parameters=True)
