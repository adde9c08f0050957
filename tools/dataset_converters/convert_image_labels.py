"""Convert an image-level label file to a pickle-free format.

The WSSS authors' repositories ship ``cls_labels_onehot.npy``: a pickled
dict {image name: multi-hot vector}. mmseg-fsr reads such files through an
unpickler that only builds numpy arrays (a file that needs anything else is
refused before it can run code), so they work as they are. This tool writes
the same labels as ``.npz`` (one vector per name, no pickle) or ``.json``
(``{name: [class ids]}``), which can be reviewed and shared without any
pickle at all.

Examples::

    python tools/dataset_converters/convert_image_labels.py \
        cls_labels_onehot.npy data/VOCdevkit/VOC2012/cls_labels_onehot.npz
    python tools/dataset_converters/convert_image_labels.py \
        cls_labels_onehot_coco.npy cls_labels_coco.json --num-classes 81
"""
import argparse
import os.path as osp
import sys


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert an image label file (.npy / .npz / .json) to a '
        'pickle-free .npz or .json file.')
    parser.add_argument('src', help='label file to read (.npy, .npz, .json)')
    parser.add_argument('dst', help='file to write (.npz or .json)')
    parser.add_argument(
        '--num-classes', type=int, default=21,
        help='classes including background: 21 for VOC, 81 for COCO')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        from mmseg_fsr.datasets.transforms.image_labels import (
            load_image_label_file, save_image_label_file)
    except ImportError:
        sys.path.insert(
            0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
        from mmseg_fsr.datasets.transforms.image_labels import (
            load_image_label_file, save_image_label_file)
    if osp.splitext(args.dst)[1].lower() not in ('.npz', '.json'):
        print(f'error: {args.dst}: write .npz or .json', file=sys.stderr)
        return 2
    try:
        labels = load_image_label_file(args.src, args.num_classes)
    except (OSError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    save_image_label_file(args.dst, labels)
    print(f'wrote {len(labels)} image labels to {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
