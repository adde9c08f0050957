# Second stage of WSSS: mmseg's fully supervised DeepLabV3+ (ResNet-101) VOC
# aug recipe, unchanged except that the training masks are FSR pseudo labels.
#   1. python tools/export_pseudo_labels.py <FSR config> <FSR checkpoint> \
#          --split train --out-dir data/VOCdevkit/VOC2012/FSRPseudoLabels
#   2. python tools/train.py <this config>   (or tools/dist_train.sh ... 4)
# Validation and testing stay on the real VOC val masks.
_base_ = 'mmseg::deeplabv3plus/deeplabv3plus_r101-d8_4xb4-20k_voc12aug-512x512.py'  # noqa

data_root = 'data/VOCdevkit/VOC2012'
# Relative to data_root: where step 1 wrote <image name>.png.
pseudo_label_dir = 'FSRPseudoLabels'

# mmseg trains on ConcatDataset([VOC train, train_aug]); both read masks from
# their own folder (SegmentationClass / SegmentationClassAug), so both are
# redirected. train_aug (aug.txt, the FSR config's `--split train`) contains
# every VOC train image, so one export covers the two lists.
dataset_train = dict(
    type='PascalVOCDataset',
    data_root=data_root,
    data_prefix=dict(img_path='JPEGImages', seg_map_path=pseudo_label_dir),
    ann_file='ImageSets/Segmentation/train.txt',
    pipeline={{_base_.train_pipeline}})
dataset_aug = dict(
    type='PascalVOCDataset',
    data_root=data_root,
    data_prefix=dict(img_path='JPEGImages', seg_map_path=pseudo_label_dir),
    ann_file='ImageSets/Segmentation/aug.txt',
    pipeline={{_base_.train_pipeline}})
train_dataloader = dict(
    dataset=dict(type='ConcatDataset', datasets=[dataset_train, dataset_aug]))
