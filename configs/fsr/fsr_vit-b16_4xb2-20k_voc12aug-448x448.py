# FSR, ViT-B/16, 4 GPUs x 2 images, 20k iterations, VOC 2012 aug, 448 crops.
# Paper: 75.7 mIoU on VOC val (multi-scale + CRF test, see the _tta config).
_base_ = [
    '../_base_/datasets/voc12aug_wsss.py',
    'mmseg::_base_/default_runtime.py',
    '../_base_/models/fsr_vit-b16.py',
    '../_base_/schedules/wsss_adamw.py',
]
max_iters = 20000
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
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=2000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(
        type='CheckpointHook', by_epoch=False, interval=2000,
        max_keep_ckpts=3, save_best='mIoU'))
log_processor = dict(by_epoch=False)
# 4 GPUs x 2 images; scale the lr with --auto-scale-lr on other setups.
auto_scale_lr = dict(enable=False, base_batch_size=8)
randomness = dict(seed=0)
