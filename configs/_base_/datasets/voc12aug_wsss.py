# PASCAL VOC 2012 + SBD for WSSS: mmseg's stock data set config, with only
# what WSSS needs changed: image-level labels, two views, native-size test.
_base_ = ['mmseg::_base_/datasets/pascal_voc12_aug.py']

data_root = 'data/VOCdevkit/VOC2012'
crop_size = 448

# Each view: random resized crop (scale 0.32-1), flip, colour jitter.
view_pipeline = [
    dict(
        type='mmpretrain.RandomResizedCrop',
        scale=crop_size,
        crop_ratio_range=(0.32, 1.0),
        backend='cv2'),
    dict(type='mmpretrain.RandomFlip', prob=0.5, direction='horizontal'),
    # torchvision's ColorJitter (as the reference): mmcv's hue shift
    # overflows under numpy 2.
    dict(type='mmpretrain.NumpyToPIL', to_rgb=True),
    dict(
        type='mmpretrain.torchvision/ColorJitter',
        brightness=0.3,
        contrast=0.3,
        saturation=0.3,
        hue=0.1),
    dict(type='mmpretrain.PILToNumpy', to_bgr=True),
]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    # Before any crop: the label is the set of classes of the whole image.
    dict(type='GenerateImageLabels', num_classes=21),
    dict(type='mmpretrain.MultiView', num_views=2, transforms=[view_pipeline]),
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
