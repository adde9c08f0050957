# PASCAL VOC 2012 aug for the second stage of WSSS: mmseg's fully supervised
# data set config, with FSR pseudo labels as the training masks. Write them
# with
#   python tools/export_pseudo_labels.py <FSR config> <FSR checkpoint> \
#       --split train --out-dir data/VOCdevkit/VOC2012/FSRPseudoLabels
# Validation and testing stay on the real VOC val masks.
_base_ = ['mmseg::_base_/datasets/pascal_voc12_aug.py']

data_root = 'data/VOCdevkit/VOC2012'
# Relative to data_root: where the export wrote <image name>.png.
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
