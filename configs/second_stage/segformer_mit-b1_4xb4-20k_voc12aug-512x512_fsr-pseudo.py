# Second stage of WSSS: SegFormer MiT-B1 trained on FSR pseudo labels.
# mmseg has no SegFormer VOC config, so this is mmseg's
# segformer/segformer_mit-b1_8xb2-160k_ade20k-512x512.py (model, optimizer,
# warm-up + poly schedule) put on mmseg's VOC aug data and 20k schedule bases
# (the ADE20K leaf cannot be inherited: its pipelines set
# reduce_zero_label=True). Training masks are FSR pseudo labels
# (../_base_/datasets/voc12aug_fsr-pseudo.py says how to write them).
#   python tools/train.py <this config>   (or tools/dist_train.sh ... 4)
_base_ = [
    'mmseg::_base_/models/segformer_mit-b0.py',
    '../_base_/datasets/voc12aug_fsr-pseudo.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_20k.py',
]
crop_size = (512, 512)
max_iters = 20000
checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segformer/mit_b1_20220624-02e5a6a1.pth'  # noqa
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint),
        embed_dims=64,
        num_heads=[1, 2, 5, 8],
        num_layers=[2, 2, 2, 2]),
    decode_head=dict(in_channels=[64, 128, 320, 512], num_classes=21))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            'pos_block': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
            'head': dict(lr_mult=10.)
        }))
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        begin=1500,
        end=max_iters,
        by_epoch=False)
]
