# PASCAL VOC 2012 + SBD for WSSS: mmseg's stock data set config, with only
# what WSSS needs changed: image-level labels, two views, native-size test
# that scores the decoder and the CAM / auxiliary-CAM / PAR pseudo labels.
_base_ = ['mmseg::_base_/datasets/pascal_voc12_aug.py']

data_root = 'data/VOCdevkit/VOC2012'
crop_size = 448

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    # Before any crop: the label is the set of classes of the whole image
    # (the class count comes from the data set).
    dict(type='GenerateImageLabels'),
    # two views, each: random resized crop, flip, colour jitter
    dict(type='WSSSMultiView', crop_size=crop_size),
    dict(type='PackWSSSInputs'),
]
# Validation and test: the decoder on the whole image at native size, and
# the CAM labels from the image's labels (model.test_cfg.output_cams).
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    # a bare image (inference_model, MMSegInferencer) passes unlabelled
    dict(type='GenerateImageLabels', allow_empty=True, optional=True),
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
val_evaluator = [
    dict(type='IoUMetric', iou_metrics=['mIoU']),
    dict(type='PseudoLabelMetric', pred_key='pred_cam_label', prefix='cam'),
    dict(
        type='PseudoLabelMetric',
        pred_key='pred_aux_cam_label',
        prefix='aux_cam'),
    dict(type='PseudoLabelMetric', pred_key='pred_par_label', prefix='par'),
]
test_evaluator = val_evaluator
