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

# mmseg's stock recipe concatenates train.txt and its SBD-only aug.txt. Here
# aug.txt is the whole train_aug list (10,582 images, VOC train included,
# see docs/dataset_prepare.md), which the FSR config's `--split train`
# exported, so it is the one training list.
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='PascalVOCDataset',
        data_root=data_root,
        data_prefix=dict(img_path='JPEGImages', seg_map_path=pseudo_label_dir),
        ann_file='ImageSets/Segmentation/aug.txt',
        pipeline={{_base_.train_pipeline}}))
