# CPU quick-start: FSR with a tiny ViT on the synthetic VOC-layout data made
# by tools/dataset_converters/make_synthetic_voc.py. Same data set classes,
# pipelines and model types as the paper config; only sizes and data_root
# differ. Point it at any VOC-layout folder with `--data-root`.
_base_ = ['./fsr_vit-b16_4xb2-20k_voc12aug-448x448.py']

data_root = 'data/synthetic_voc'
crop_size = 64
patch_size = 8
embed_dims = 96
projector_dims = 256
max_iters = 400
warmup_iters = 40

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='GenerateImageLabels', num_classes=21),
    # two views, each: random resized crop, flip, colour jitter
    dict(type='WSSSMultiView', crop_size=crop_size),
    dict(type='PackWSSSInputs'),
]
cam_eval_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='GenerateImageLabels', num_classes=21, allow_empty=True),
    dict(type='PackWSSSInputs', pack_seg_map=True),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=1,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=cam_eval_pipeline))
test_dataloader = val_dataloader
# Decoder, CAM and PAR-refined pseudo labels, scored in one pass.
val_evaluator = [
    dict(type='IoUMetric', iou_metrics=['mIoU']),
    dict(type='PseudoLabelMetric', pred_key='pred_cam_label', prefix='cam'),
    dict(type='PseudoLabelMetric', pred_key='pred_par_label', prefix='par'),
]
test_evaluator = val_evaluator

model = dict(
    data_preprocessor=dict(test_cfg=dict(size_divisor=patch_size)),
    backbone=dict(
        img_size=(crop_size, crop_size),
        patch_size=patch_size,
        embed_dims=embed_dims,
        num_layers=4,
        num_heads=4,
        out_indices=(1, 3),
        drop_path_rate=0.0,
        init_cfg=None),
    cam_head=dict(in_channels=embed_dims),
    decode_head=dict(in_channels=embed_dims, channels=64, dilation=2),
    # 2x2-patch blocks: a 4x4 block grid, as the authors' 7x7 at 448 px
    mask_neck=dict(patch_size=patch_size, block_size=2 * patch_size),
    aggregation_head=dict(
        in_channels=embed_dims,
        num_heads=4,
        projector=dict(
            in_channels=embed_dims,
            hidden_channels=128,
            bottleneck_channels=32,
            out_channels=projector_dims)),
    uncertain_loss=dict(out_channels=projector_dims),
    certain_loss=dict(out_channels=projector_dims),
    pseudo_labeller=dict(par=dict(dilations=(1, 2, 4), num_iter=5)),
    loss_start_iters=dict(seg=100, aff=0, fsr=0),
    test_cfg=dict(output_cams=True))

optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.1,
        by_epoch=False,
        begin=0,
        # +1: the factor reaches 1 at warmup_iters, as the authors' schedule
        end=warmup_iters + 1),
    dict(
        type='CosineAnnealingLR',
        eta_min=0.0,
        by_epoch=False,
        begin=warmup_iters,
        end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=200, max_keep_ckpts=2, save_best=None))
custom_hooks = [dict(type='FSRTeacherHook', momentum=0.99, end_momentum=1.0)]
env_cfg = dict(dist_cfg=dict(backend='gloo'))
