# CPU second stage: DeepLabV3+ ResNet-18 (mmseg's
# deeplabv3plus_r18-d8 head sizes) trained from scratch on FSR pseudo labels
# of the synthetic VOC-layout data (tools/dataset_converters/
# make_synthetic_voc.py, tools/quickstart.py). Same data set types,
# transforms and optimiser as the DeepLabV3+ R-101 second-stage config; only
# sizes, the schedule and data_root differ. No weights are downloaded. 45 s
# on 2 CPU cores, validation included (docs/second_stage.md gives the whole
# recipe).
_base_ = ['./deeplabv3plus_r101-d8_4xb4-20k_voc12aug-512x512_fsr-pseudo.py']

data_root = 'data/synthetic_voc'
crop_size = (64, 64)
max_iters = 200

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomResize',
        scale=(256, 64),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 64), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=4,
    num_workers=2,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=1,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    # from scratch: nothing to download
    pretrained=None,
    backbone=dict(depth=18),
    decode_head=dict(
        c1_in_channels=64, c1_channels=12, in_channels=512, channels=128),
    auxiliary_head=dict(in_channels=256, channels=64))

# no `end`: mmengine ends the decay at train_cfg.max_iters, so a run
# shortened with --cfg-options train_cfg.max_iters=N still decays to eta_min
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, by_epoch=False)
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=max_iters))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
