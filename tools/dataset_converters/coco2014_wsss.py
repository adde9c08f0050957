"""Rasterise COCO 2014 instance annotations into VOC-style class masks.

Input (the official downloads, extracted under one root)::

    ROOT/train2014/COCO_train2014_*.jpg    ROOT/val2014/COCO_val2014_*.jpg
    ROOT/annotations/instances_train2014.json
    ROOT/annotations/instances_val2014.json

Output (under ``--out-dir``, default ROOT)::

    SegmentationClass/train2014/<stem>.png   single channel ('L'): 0 = bg,
    SegmentationClass/val2014/<stem>.png     1..80 classes, 255 crowd/ignore
    ImageSets/train.txt, ImageSets/val.txt   stems with >= 1 class (sorted)
    ImageSets/val_5k.txt                     fixed 5,000-image part of val
    ImageSets/train_empty.txt, val_empty.txt stems with no class
    cls_labels_coco.json                     {stem: [class ids 1..80]}, all
                                             images ([] when empty)

Class ids: COCO category ids in ascending order map to 1..80. Painting order
per image: crowd regions are set to 255 first; then non-crowd instances are
painted from the largest (pixel count) to the smallest, equal sizes in
ascending annotation id (the higher id ends on top), so small objects stay
visible on top of large ones and annotated instances beat the crowd ignore.
The image-level labels are the classes left in the mask.

Example::

    python tools/dataset_converters/coco2014_wsss.py data/coco2014 --nproc 8
"""
import argparse
import json
import os
import os.path as osp
import random
import sys
from functools import partial
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmengine.utils import track_parallel_progress, track_progress
from PIL import Image
from pycocotools import mask as mask_utils

#: Split sizes (images with >= 1 class) reported by the paper.
EXPECTED = {'train': 82081, 'val': 40137}
VAL_SUBSET = 5000  # size of the validation part used during training
IGNORE = 255
LABEL_FILE = 'cls_labels_coco.json'

# (annotation id, category id, iscrowd, segmentation)
Annotation = Tuple[int, int, int, object]


def segm_to_mask(segm, height: int, width: int) -> np.ndarray:
    """Decode one COCO segmentation with pycocotools.

    Args:
        segm (list | dict): Polygons (list of flat ``[x, y, ...]`` lists),
            uncompressed RLE (``counts`` a list) or compressed RLE
            (``counts`` a string).
        height (int): Image height.
        width (int): Image width.

    Returns:
        np.ndarray: Boolean mask (H, W).

    Raises:
        ValueError: If an RLE's ``size`` differs from the image size.
    """
    if isinstance(segm, list):
        # Fewer than 3 points is no area (and 4 numbers would be read as a
        # box by frPyObjects).
        polys = [p for p in segm if len(p) >= 6]
        if not polys:
            return np.zeros((height, width), bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    else:
        if list(segm['size']) != [height, width]:
            raise ValueError(f'RLE size {segm["size"]} != image size '
                             f'{[height, width]}')
        rle = (
            mask_utils.frPyObjects(segm, height, width)
            if isinstance(segm['counts'], list) else segm)
    return mask_utils.decode(rle).astype(bool)


def rasterize(anns: Sequence[Annotation], height: int, width: int,
              cat_to_label: Dict[int, int]) -> np.ndarray:
    """Paint the class mask of one image (rule in the module docstring).

    Args:
        anns (Sequence[Annotation]): The image's annotations.
        height (int): Image height.
        width (int): Image width.
        cat_to_label (dict[int, int]): COCO category id -> class id 1..80.

    Returns:
        np.ndarray: ``uint8`` mask (H, W).
    """
    out = np.zeros((height, width), np.uint8)
    instances = []
    for ann_id, cat_id, iscrowd, segm in anns:
        try:
            m = segm_to_mask(segm, height, width)
        except Exception as e:
            raise ValueError(f'annotation {ann_id}: {e}') from e
        if iscrowd:
            out[m] = IGNORE
        else:
            instances.append((-int(m.sum()), ann_id, cat_to_label[cat_id], m))
    for _, _, label, m in sorted(instances, key=lambda t: t[:2]):
        out[m] = label
    return out


def _read_valid_png(path: str, size: Tuple[int, int]) -> Optional[np.ndarray]:
    """The mask at ``path`` if it decodes and has the right size/mode."""
    try:
        with Image.open(path) as img:
            if img.mode == 'L' and img.size == size:
                return np.array(img)
    except (OSError, SyntaxError):
        pass
    return None


def process_image(task: Tuple[str, str, int, int, List[Annotation]],
                  cat_to_label: Dict[int, int],
                  overwrite: bool = False) -> Tuple[str, List[int], bool]:
    """Check one image and write (or reuse) its class mask.

    Args:
        task (tuple): ``(image path, mask path, height, width, annotations)``.
        cat_to_label (dict[int, int]): COCO category id -> class id.
        overwrite (bool): Rewrite masks that already exist and are valid.

    Returns:
        tuple[str, list[int], bool]: Stem, sorted class ids in the mask,
        whether the mask was (re)written.

    Raises:
        RuntimeError: Naming the image if it is unreadable or its size
            differs from the annotation file, or the annotation that fails.
    """
    img_path, png_path, height, width, anns = task
    try:
        with Image.open(img_path) as img:  # header only: cheap
            size = img.size
    except (OSError, SyntaxError) as e:
        raise RuntimeError(
            f'corrupt or unreadable image {img_path}: {e}') from e
    if size != (width, height):
        raise RuntimeError(f'{img_path} is {size[0]}x{size[1]} but the '
                           f'annotation file says {width}x{height}')
    mask = None if overwrite else _read_valid_png(png_path, (width, height))
    written = mask is None
    if written:
        try:
            mask = rasterize(anns, height, width, cat_to_label)
        except ValueError as e:
            raise RuntimeError(f'{img_path}: {e}') from e
        # Write then rename, so an interrupted run leaves no partial PNG.
        tmp = f'{png_path}.tmp{os.getpid()}'
        Image.fromarray(mask).save(tmp, format='PNG')
        os.replace(tmp, png_path)
    labels = [int(v) for v in np.unique(mask) if 0 < v < IGNORE]
    stem = osp.splitext(osp.basename(img_path))[0]
    return stem, labels, written


def load_coco_json(path: str) -> dict:
    """Load an ``instances_*.json`` file and check its top-level keys."""
    if not osp.isfile(path):
        sys.exit(f'error: annotation file not found: {path}')
    with open(path) as f:
        try:
            coco = json.load(f)
        except json.JSONDecodeError as e:
            sys.exit(f'error: {path} is not valid JSON: {e}')
    missing = {'images', 'annotations', 'categories'} - set(coco)
    if missing:
        sys.exit(f'error: {path} is not a COCO instances file (no '
                 f'{sorted(missing)})')
    return coco


def build_tasks(coco: dict, img_dir: str,
                out_dir: str) -> List[Tuple[str, str, int, int, list]]:
    """One task per image, annotations grouped by image id."""
    anns: Dict[int, List[Annotation]] = {}
    for a in coco['annotations']:
        anns.setdefault(a['image_id'], []).append(
            (a['id'], a['category_id'], a.get('iscrowd', 0),
             a['segmentation']))
    tasks = []
    for img in sorted(coco['images'], key=lambda i: i['file_name']):
        stem = osp.splitext(img['file_name'])[0]
        tasks.append((osp.join(img_dir, img['file_name']),
                      osp.join(out_dir, f'{stem}.png'), img['height'],
                      img['width'], anns.get(img['id'], [])))
    return tasks


def write_list(path: str, names: Sequence[str]) -> None:
    """Write one name per line."""
    with open(path, 'w') as f:
        f.writelines(f'{n}\n' for n in names)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse command-line arguments."""
    parser = argparse.ArgumentParser(
        description='Convert COCO 2014 instance annotations to VOC-style '
        'class PNGs, image-level labels and split lists for WSSS.')
    parser.add_argument(
        'root', help='folder with train2014/, val2014/ and annotations/')
    parser.add_argument(
        '--out-dir', help='output folder (default: ROOT)')
    parser.add_argument(
        '--splits',
        nargs='+',
        choices=['train', 'val'],
        default=['train', 'val'],
        help='splits to convert (default: train val)')
    parser.add_argument(
        '--nproc', type=int, default=1, help='worker processes (default 1)')
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help='rewrite masks that already exist and are valid')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    """Convert the requested splits and write lists and labels."""
    args = parse_args(argv)
    out_root = args.out_dir or args.root
    os.makedirs(osp.join(out_root, 'ImageSets'), exist_ok=True)
    label_file = osp.join(out_root, LABEL_FILE)
    all_labels: Dict[str, List[int]] = {}
    if osp.isfile(label_file):  # keep the split(s) not converted now
        with open(label_file) as f:
            all_labels = json.load(f)

    cat_ids = None
    for split in args.splits:
        folder = f'{split}2014'
        img_dir = osp.join(args.root, folder)
        if not osp.isdir(img_dir):
            sys.exit(f'error: image folder not found: {img_dir}')
        coco = load_coco_json(
            osp.join(args.root, 'annotations', f'instances_{folder}.json'))
        split_cats = sorted(c['id'] for c in coco['categories'])
        if cat_ids is not None and split_cats != cat_ids:
            sys.exit('error: train and val annotation files list different '
                     'categories')
        cat_ids = split_cats
        cat_to_label = {c: i + 1 for i, c in enumerate(cat_ids)}
        if len(cat_ids) != 80:
            print(f'WARNING: {len(cat_ids)} categories, COCO has 80',
                  file=sys.stderr)

        out_dir = osp.join(out_root, 'SegmentationClass', folder)
        os.makedirs(out_dir, exist_ok=True)
        tasks = build_tasks(coco, img_dir, out_dir)
        del coco
        # Catch a wrong folder before spending minutes on the masks.
        missing = [t[0] for t in tasks if not osp.isfile(t[0])]
        if missing:
            sys.exit(f'error: {len(missing)} of {len(tasks)} images listed in '
                     f'instances_{folder}.json are missing from {img_dir}, '
                     f'e.g. {missing[0]}')

        print(f'{split}: {len(tasks)} images -> {out_dir}')
        func = partial(
            process_image, cat_to_label=cat_to_label,
            overwrite=args.overwrite)
        try:
            if args.nproc > 1:
                results = track_parallel_progress(
                    func, tasks, nproc=args.nproc, chunksize=16)
            else:
                results = track_progress(func, tasks)
        except RuntimeError as e:  # names the offending image
            sys.exit(f'\nerror: {e}')

        stems = {stem for stem, _, _ in results}
        all_labels = {k: v for k, v in all_labels.items() if k not in stems}
        labelled = [stem for stem, labels, _ in results if labels]
        empty = [stem for stem, labels, _ in results if not labels]
        # Empty images too (as []), so any list of the split can be used.
        all_labels.update({stem: labels for stem, labels, _ in results})
        write_list(osp.join(out_root, 'ImageSets', f'{split}.txt'), labelled)
        write_list(
            osp.join(out_root, 'ImageSets', f'{split}_empty.txt'), empty)
        if split == 'val':
            part = random.Random(0).sample(labelled,
                                           min(VAL_SUBSET, len(labelled)))
            write_list(
                osp.join(out_root, 'ImageSets', 'val_5k.txt'), sorted(part))
        n_written = sum(w for _, _, w in results)
        print(f'\n{split}: {n_written} masks written, '
              f'{len(results) - n_written} reused; {len(labelled)} images '
              f'with >= 1 class (paper: {EXPECTED[split]}), {len(empty)} '
              'without')
        if len(labelled) != EXPECTED[split]:
            print(f'WARNING: {split} has {len(labelled)} labelled images, the '
                  f'paper uses {EXPECTED[split]}: partial download or other '
                  'annotation files, results are not comparable.',
                  file=sys.stderr)

    with open(label_file, 'w') as f:
        json.dump(dict(sorted(all_labels.items())), f)
    print(f'wrote {label_file}')


if __name__ == '__main__':
    main()
