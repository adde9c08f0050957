# The authors' COCO schedule: as fsr_20k, 80k iterations, the same 1,500
# warm-up iterations.
_base_ = ['./fsr_20k.py']
warmup = 1500 / 80000
param_scheduler = [
    dict(
        type='LinearWarmupLR',
        start_factor=0.1,
        by_epoch=False,
        begin=0,
        end=warmup),
    dict(
        type='CosineAnnealingLR',
        eta_min=0.0,
        by_epoch=False,
        begin=warmup,
        end=1.0),
]
train_cfg = dict(max_iters=80000)
