# CPU quick-start: FSR with a tiny ViT on the synthetic VOC-layout data made
# by tools/dataset_converters/make_synthetic_voc.py. Same data set classes,
# pipelines, model types and schedule shape as the paper config; only sizes,
# the learning rate, the teacher momentum, how often panels are drawn, the
# CRF worker count and data_root differ. Point it at any VOC-layout folder
# with `--data-root`.
_base_ = ['./fsr_vit-b16_4xb2-20k_voc12aug-448x448.py']
# after _base_: with an import first, mmengine would parse this file as a
# lazy-import (pure Python) config
import os  # noqa: E402

data_root = 'data/synthetic_voc'
crop_size = 64
patch_size = 8
embed_dims = 96
projector_dims = 256

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='GenerateImageLabels'),
    dict(type='WSSSMultiView', crop_size=crop_size),
    dict(type='PackWSSSInputs'),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=1, persistent_workers=False, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader

# the top-level copy is the one mmengine gives the --tta model
data_preprocessor = dict(test_cfg=dict(size_divisor=patch_size))
model = dict(
    data_preprocessor=data_preprocessor,
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
    mask_neck=dict(block_size=2 * patch_size),
    aggregation_head=dict(
        in_channels=embed_dims,
        num_heads=4,
        projector=dict(
            in_channels=embed_dims,
            hidden_channels=128,
            bottleneck_channels=32,
            out_channels=projector_dims)),
    # a short run: a faster teacher (momentum 0.99 -> 1)
    teacher_cfg=dict(momentum=0.99, end_momentum=1.0),
    uncertain_loss=dict(out_channels=projector_dims),
    certain_loss=dict(out_channels=projector_dims),
    pseudo_labeller=dict(par=dict(dilations=(1, 2, 4), num_iter=5)))

optim_wrapper = dict(optimizer=dict(lr=5e-4))
train_cfg = dict(max_iters=400, val_interval=1.0)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=0.5, max_keep_ckpts=2, save_best=None))
custom_hooks = [
    dict(type='FSRTeacherHook'),
    dict(type='NonFiniteLossGuardHook', max_loss=1e4),
    dict(type='DeterministicResumeHook'),
    dict(type='WSSSVisualizationHook', interval=0.25, num_images=2),
]
env_cfg = dict(dist_cfg=dict(backend='gloo'))
# --tta: no more CRF worker processes than this machine has cores (the
# paper config's 4 assume a GPU machine)
tta_model = dict(crf_workers=min(4, os.cpu_count() or 1))
