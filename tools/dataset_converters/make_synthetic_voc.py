"""Write a small synthetic PASCAL-VOC-layout dataset for WSSS smoke tests.

Example::

    python tools/dataset_converters/make_synthetic_voc.py data/synthetic_voc \
        --num-train 200 --num-val 50 --img-size 128 128
"""
import argparse
import json
import time

from mmseg_fsr.testing.synthetic import (CLASS_STYLES, DEFAULT_CLASS_IDS,
                                         generate_synthetic_voc)


def parse_args() -> argparse.Namespace:
    """Parse command-line arguments."""
    parser = argparse.ArgumentParser(
        description='Generate a synthetic PASCAL VOC-layout dataset '
        '(JPEGImages, SegmentationClass[Aug], ImageSets/Segmentation) whose '
        'objects use real VOC class ids.')
    parser.add_argument('out_dir', help='output folder (the data_root)')
    parser.add_argument(
        '--num-train', type=int, default=200,
        help='training images, listed in train.txt and aug.txt')
    parser.add_argument(
        '--num-val', type=int, default=50, help='validation images')
    parser.add_argument(
        '--img-size', type=int, nargs=2, default=[128, 128],
        metavar=('H', 'W'), help='image height and width')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument(
        '--class-ids', type=int, nargs='+', default=list(DEFAULT_CLASS_IDS),
        choices=sorted(CLASS_STYLES), help='VOC class ids to draw')
    parser.add_argument(
        '--max-objects', type=int, default=3, help='most objects per image')
    parser.add_argument(
        '--border-width', type=int, default=4,
        help='width in px of the 255 ignore band on object contours')
    return parser.parse_args()


def main() -> None:
    """Generate the dataset and print its summary as JSON."""
    args = parse_args()
    start = time.perf_counter()
    summary = generate_synthetic_voc(
        args.out_dir,
        num_train=args.num_train,
        num_val=args.num_val,
        img_size=tuple(args.img_size),
        seed=args.seed,
        class_ids=args.class_ids,
        max_objects=args.max_objects,
        border_width=args.border_width)
    summary['seconds'] = round(time.perf_counter() - start, 2)
    print(json.dumps(summary, indent=2))


if __name__ == '__main__':
    main()
