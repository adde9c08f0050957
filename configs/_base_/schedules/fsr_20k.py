# The FSR authors' training schedule: AdamW, lr 6e-5 warmed up linearly from
# 0.1x to its peak at 7.5% of the run (1,500 of 20k iterations), then cosine
# decay to 0; 10x lr on the CAM classifiers, the decoder and the projector
# (the aggregation blocks and the class-token query train with the
# backbone); no weight decay on norms, biases and tokens.
# Iterations given as floats are fractions of max_iters (WSSSRunner), so
# `--cfg-options train_cfg.max_iters=N` keeps the schedule's shape.
runner_type = 'WSSSRunner'
optim_wrapper = dict(
    type='OptimWrapper',
    # keeps the no-decay rules on the heads' norms and biases
    constructor='WSSSOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999),
                   weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0,  # 1-D params such as attention in_proj_bias
        custom_keys={
            'pos_embed': dict(decay_mult=0.0),
            'cls_token': dict(decay_mult=0.0),
            'mask_token': dict(decay_mult=0.0),
            'cam_head': dict(lr_mult=10.0),
            'decode_head': dict(lr_mult=10.0),
            'aggregation_head.projector': dict(lr_mult=10.0),
        }))
param_scheduler = [
    dict(
        type='LinearWarmupLR',
        start_factor=0.1,
        by_epoch=False,
        begin=0,
        end=0.075),
    dict(
        type='CosineAnnealingLR',
        eta_min=0.0,
        by_epoch=False,
        begin=0.075,
        end=1.0),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=20000, val_interval=0.1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # writes to a temporary file, then renames: a failed save keeps the
    # last complete checkpoint (mmseg_fsr.engine.AtomicCheckpointHook)
    checkpoint=dict(
        type='AtomicCheckpointHook', by_epoch=False, interval=0.1,
        max_keep_ckpts=3, save_best='mIoU'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # draws nothing unless switched on (tools/test.py --show-dir); then
    # every image
    visualization=dict(type='SegVisualizationHook', interval=1))
custom_hooks = [
    # the EMA teacher moved right after each step, so that checkpoints hold
    # the teacher of their step (the model's teacher_cfg sets the momentum)
    dict(type='FSRTeacherHook'),
    # stop at the first NaN / exploding loss, before a checkpoint is saved
    dict(type='NonFiniteLossGuardHook', max_loss=1e4),
    # random draws as a function of (seed, iteration, rank): exact resume
    dict(type='DeterministicResumeHook'),
    # panels (image, CAM per class, token mask, PAR label, prediction) of 2
    # training images to every visualizer backend: <work_dir>/<time>/
    # vis_data/vis_image by default; TensorBoard: docs/visualization.md
    dict(type='WSSSVisualizationHook', interval=0.025, num_images=2),
]
randomness = dict(seed=0)
# 4 GPUs x 2 images; scale the lr with --auto-scale-lr on other setups.
auto_scale_lr = dict(enable=False, base_batch_size=8)
