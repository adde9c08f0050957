# Second stage of WSSS: mmseg's fully supervised DeepLabV3+ (ResNet-101) VOC
# aug recipe (deeplabv3plus_r101-d8_4xb4-20k_voc12aug-512x512.py), unchanged
# except that the training masks are FSR pseudo labels
# (../_base_/datasets/voc12aug_fsr-pseudo.py says how to write them).
#   python tools/train.py <this config>   (or tools/dist_train.sh ... 4)
_base_ = [
    'mmseg::_base_/models/deeplabv3plus_r50-d8.py',
    '../_base_/datasets/voc12aug_fsr-pseudo.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_20k.py',
]
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained='open-mmlab://resnet101_v1c',
    backbone=dict(depth=101),
    decode_head=dict(num_classes=21),
    auxiliary_head=dict(num_classes=21))
