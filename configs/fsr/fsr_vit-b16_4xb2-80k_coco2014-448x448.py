# FSR, ViT-B/16, 4 GPUs x 2 images, 80k iterations, COCO 2014, 448 crops.
# Paper: 45.4 mIoU on COCO val. Staged losses of the authors' code: until 8k
# classification + FSR only, from 8k the decoder, from 12k the affinity loss;
# CAM threshold 0.65 for foreground pseudo labels, 0.45 for scoring CAMs.
_base_ = [
    '../_base_/datasets/coco2014_wsss.py',
    'mmseg::_base_/default_runtime.py',
    '../_base_/models/fsr_vit-b16.py',
    '../_base_/schedules/wsss_adamw.py',
]
model = dict(
    decode_head=dict(num_classes=81),
    cam_head=dict(num_classes=80),
    pseudo_labeller=dict(high_thr=0.65, low_thr=0.25, eval_bg_thr=0.45),
    loss_start_iters=dict(fsr=0, seg=8000, aff=12000))
max_iters = 80000
warmup_iters = 1500
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
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=8000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(
        type='CheckpointHook', by_epoch=False, interval=8000,
        max_keep_ckpts=3, save_best='mIoU'))
log_processor = dict(by_epoch=False)
auto_scale_lr = dict(enable=False, base_batch_size=8)
randomness = dict(seed=0)
