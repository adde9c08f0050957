# MS COCO 2014 for WSSS: VOC-style class PNGs made from the instance
# annotations by tools/dataset_converters/coco2014_wsss.py (81 classes, not
# COCO-Stuff). Built on mmseg's stock COCO data set config; only what WSSS
# needs is changed.
_base_ = ['mmseg::_base_/datasets/coco-stuff164k.py']

data_root = 'data/coco2014'
crop_size = 448

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='GenerateImageLabels'),
    # two views, each: random resized crop, flip, colour jitter
    dict(type='WSSSMultiView', crop_size=crop_size),
    dict(type='PackWSSSInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    # a bare image (inference_model, MMSegInferencer) passes unlabelled
    dict(type='GenerateImageLabels', allow_empty=True, optional=True),
    dict(type='PackWSSSInputs', pack_seg_map=True),
]


def coco_split(split: str, ann_file: str, **kwargs) -> dict:
    return dict(
        type='WSSSCOCODataset',
        data_root=data_root,
        data_prefix=dict(
            img_path=f'{split}2014',
            seg_map_path=f'SegmentationClass/{split}2014'),
        ann_file=ann_file,
        img_label_file='cls_labels_coco.json',
        **kwargs)


train_dataloader = dict(
    batch_size=2,
    num_workers=4,
    dataset=dict(
        _delete_=True,
        # images without any class are not used for training
        **coco_split('train', 'ImageSets/train.txt',
                     filter_empty_labels=True,
                     pipeline=train_pipeline)))
# The reference validates on a fixed 5k part of val during training.
val_dataloader = dict(
    batch_size=1,
    dataset=dict(
        _delete_=True,
        **coco_split('val', 'ImageSets/val_5k.txt',
                     filter_empty_labels=False,
                     pipeline=test_pipeline)))
# Final numbers on the full val split (40,137 images).
test_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        _delete_=True,
        **coco_split('val', 'ImageSets/val.txt',
                     filter_empty_labels=False,
                     pipeline=test_pipeline)))
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
