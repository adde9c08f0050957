# PASCAL VOC 2012 + SBD for WSSS: mmseg's stock data set config, with only
# what WSSS needs changed: image-level labels, two views, native-size test.
_base_ = ['mmseg::_base_/datasets/pascal_voc12_aug.py']

data_root = 'data/VOCdevkit/VOC2012'
crop_size = 448

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    # Before any crop: the label is the set of classes of the whole image.
    dict(type='GenerateImageLabels', num_classes=21),
    # two views, each: random resized crop, flip, colour jitter
    dict(type='WSSSMultiView', crop_size=crop_size),
    dict(type='PackWSSSInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
# Scores CAM pseudo labels too (model.test_cfg.output_cams=True).
cam_eval_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='GenerateImageLabels', num_classes=21,
        allow_empty=True),
    dict(type='PackWSSSInputs', pack_seg_map=True),
]

train_dataloader = dict(
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        _delete_=True,
        type='WSSSVOCDataset',
        data_root=data_root,
        data_prefix=dict(
            img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
        # train_aug: 10,582 images (VOC train + SBD, minus VOC val)
        ann_file='ImageSets/Segmentation/aug.txt',
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    dataset=dict(
        type='WSSSVOCDataset', data_root=data_root,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
