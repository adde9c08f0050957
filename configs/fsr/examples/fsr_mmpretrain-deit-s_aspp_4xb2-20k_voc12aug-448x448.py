# Example: the paper's FSR recipe with an mmpretrain DeiT-S backbone and a
# stock mmseg ASPP decode head. Everything else (CAM head, masking neck,
# MCA aggregation head, FSR and affinity losses, teacher hook, data, schedule)
# is inherited unchanged. Not a paper setting: no reference numbers.
# See docs/extending.md for what a backbone must provide.
_base_ = ['../fsr_vit-b16_4xb2-20k_voc12aug-448x448.py']

embed_dims = 384  # DeiT-S
deit_checkpoint = 'https://download.openmmlab.com/mmclassification/v0/deit/deit-small_pt-4xb256_in1k_20220218-9425b9bb.pth'  # noqa
model = dict(
    # DeiT was trained with the ImageNet mean / std
    data_preprocessor=dict(
        mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]),
    backbone=dict(
        _delete_=True,
        type='MMPretrainViTAdapter',
        arch='deit-small',
        img_size=448,
        patch_size=16,
        out_indices=(9, 11),  # auxiliary CAM on layer -3, final layer
        drop_path_rate=0.1,
        # classifier checkpoint; pos_embed is resized from 224 to 448
        init_cfg=dict(
            type='Pretrained', checkpoint=deit_checkpoint,
            prefix='backbone.')),
    cam_head=dict(in_channels=embed_dims),
    decode_head=dict(
        _delete_=True,
        type='ASPPHead',
        in_channels=embed_dims,
        in_index=-1,
        channels=256,
        dilations=(1, 6, 12, 18),
        dropout_ratio=0.1,
        num_classes=21,
        norm_cfg=None,  # 2 images per GPU: too few for batch norm
        align_corners=False,
        # the FSR decoder loss: background / foreground balanced CE
        loss_decode=dict(type='BgFgCrossEntropyLoss', loss_weight=0.1)),
    aggregation_head=dict(
        in_channels=embed_dims,
        num_heads=6,
        projector=dict(in_channels=embed_dims)))
