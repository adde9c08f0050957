"""A tiny synthetic PASCAL-VOC-layout dataset for smoke tests and demos.

The folder it writes is read by the unchanged VOC dataset classes and
21-class configs (only ``data_root`` and image sizes differ). Objects use
real VOC class ids, each with its own colour, texture and shape, on a muted
textured background, so that a tiny ViT can learn the classes from image
labels in a few CPU minutes and its CAMs can be scored against the masks.
"""
import json
import os
import os.path as osp
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

from ..datasets.transforms.image_labels import save_image_label_file
from ..datasets.voc_wsss import pascal_voc_palette

VOC_CLASSES = (
    'background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus',
    'car', 'cat', 'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike',
    'person', 'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor')

# VOC class id -> (shape, RGB colour, texture). Saturated, far-apart colours
# on a grey background keep the classes separable for a tiny model.
CLASS_STYLES: Dict[int, Tuple[str, Tuple[int, int, int], str]] = {
    1: ('disc', (225, 35, 35), 'noise'),         # aeroplane: red
    2: ('square', (35, 205, 55), 'checker'),     # bicycle: green
    3: ('triangle', (45, 75, 235), 'gradient'),  # bird: blue
    4: ('bar', (245, 220, 25), 'stripes'),       # boat: yellow
    5: ('ring', (225, 40, 225), 'noise'),        # bottle: magenta
    6: ('cross', (30, 215, 225), 'checker'),     # bus: cyan
}
DEFAULT_CLASS_IDS = (1, 2, 3, 4)
IGNORE_INDEX = 255
_SPLIT_CODES = {'train': 0, 'val': 1}


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Muted grey-ish texture: smooth blotches plus pixel noise (float RGB)."""
    base = rng.uniform(80, 170) + rng.uniform(-15, 15, size=3)
    grid = rng.normal(0, 28, size=(max(h // 16, 2), max(w // 16, 2), 3))
    blotches = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    # Shared luminance noise keeps the background desaturated.
    grain = rng.normal(0, 10, size=(h, w, 1))
    return base + blotches * 0.25 + blotches.mean(2, keepdims=True) + grain


def _shape_mask(rng: np.random.Generator, shape: str, h: int, w: int,
                cy: float, cx: float, size: float) -> np.ndarray:
    """Binary mask of one object of diameter ``size`` centred at (cy, cx)."""
    mask = np.zeros((h, w), np.uint8)
    angle = rng.uniform(0, 180)
    centre = (int(round(cx)), int(round(cy)))
    half = size / 2
    if shape == 'disc':
        axes = (int(half), int(half * rng.uniform(0.75, 1.0)))
        cv2.ellipse(mask, centre, axes, angle, 0, 360, 1, -1)
    elif shape == 'ring':
        axes = (int(half), int(half * rng.uniform(0.8, 1.0)))
        cv2.ellipse(mask, centre, axes, angle, 0, 360, 1, -1)
        # A thick ring, so the ignore border cannot swallow it.
        inner = (max(int(axes[0] * 0.45), 1), max(int(axes[1] * 0.45), 1))
        cv2.ellipse(mask, centre, inner, angle, 0, 360, 0, -1)
    elif shape in ('square', 'bar'):
        aspect = 1.0 if shape == 'square' else rng.uniform(2.2, 3.0)
        side = size / np.sqrt(aspect) if shape == 'bar' else size * 0.85
        box = cv2.boxPoints(((cx, cy), (side * aspect, side), angle))
        cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 1)
    elif shape == 'triangle':
        start = rng.uniform(0, 2 * np.pi)
        theta = start + np.array([0, 2, 4]) * np.pi / 3
        pts = np.stack([cx + half * np.cos(theta), cy + half * np.sin(theta)],
                       axis=1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    elif shape == 'cross':
        arm = size * 0.32
        for rot in (angle, angle + 90):
            box = cv2.boxPoints(((cx, cy), (size, arm), rot))
            cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 1)
    else:
        raise ValueError(f'unknown shape {shape!r}')
    return mask.astype(bool)


def _texture(rng: np.random.Generator, texture: str, h: int,
             w: int) -> np.ndarray:
    """Per-pixel brightness factor (H, W, 1) for an object's texture."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    if texture == 'checker':
        cell = rng.integers(5, 9)
        factor = np.where(((yy // cell) + (xx // cell)) % 2 == 0, 1.0, 0.7)
    elif texture == 'gradient':
        proj = np.cos(angle) * xx + np.sin(angle) * yy
        factor = 0.6 + 0.4 * (proj - proj.min()) / max(np.ptp(proj), 1.0)
    elif texture == 'stripes':
        period = rng.integers(6, 10)
        proj = np.cos(angle) * xx + np.sin(angle) * yy
        factor = np.where((proj // (period / 2)) % 2 == 0, 1.0, 0.4)
    else:  # 'noise'
        factor = 1.0 + rng.normal(0, 0.06, size=(h, w))
    return factor[..., None]


def _draw_image(rng: np.random.Generator, h: int, w: int,
                class_ids: Sequence[int], max_objects: int,
                border_width: int) -> Tuple[np.ndarray, np.ndarray]:
    """Render one RGB image and its VOC-style label map."""
    img = _background(rng, h, w)
    label = np.zeros((h, w), np.uint8)
    num_objects = int(rng.integers(1, min(max_objects, len(class_ids)) + 1))
    classes = rng.choice(class_ids, size=num_objects, replace=False)
    occupied = np.zeros((h, w), bool)
    for cls in classes:
        shape, colour, texture = CLASS_STYLES[int(cls)]
        size = rng.uniform(0.3, 0.5) * min(h, w)
        # Rejection-sample a spot that does not overlap earlier objects, so
        # every listed class stays clearly visible; give up after a few tries.
        for _ in range(20):
            cy = rng.uniform(size / 2, h - size / 2)
            cx = rng.uniform(size / 2, w - size / 2)
            mask = _shape_mask(rng, shape, h, w, cy, cx, size)
            if not (mask & occupied).any():
                break
        occupied |= cv2.dilate(mask.astype(np.uint8),
                               np.ones((5, 5), np.uint8)).astype(bool)
        tint = np.array(colour, np.float32) + rng.uniform(-20, 20, size=3)
        obj = tint * _texture(rng, texture, h, w) + rng.normal(
            0, 6, size=(h, w, 1))
        img[mask] = obj[mask]
        label[mask] = cls
    if border_width > 0:
        # VOC marks a band around every object contour as 'ignore': pixels
        # whose neighbourhood holds more than one label.
        kernel = np.ones((border_width + 1, border_width + 1), np.uint8)
        band = cv2.dilate(label, kernel) != cv2.erode(label, kernel)
        label[band] = IGNORE_INDEX
    return np.clip(img, 0, 255).astype(np.uint8), label


def _save_palette_png(label: np.ndarray, path: str,
                      palette: List[int]) -> None:
    """Write a label map as an 8-bit palette ('P' mode) PNG, like VOC."""
    png = Image.fromarray(label)
    png.putpalette(palette)  # turns the 'L' image into a 'P' one
    png.save(path)


def _make_dirs(out_dir: str) -> Dict[str, str]:
    """The VOC folders under ``out_dir``, created, by short name."""
    dirs = {
        key: osp.join(out_dir, sub)
        for key, sub in (('img', 'JPEGImages'), ('seg', 'SegmentationClass'),
                         ('aug', 'SegmentationClassAug'),
                         ('sets', osp.join('ImageSets', 'Segmentation')))
    }
    for path in dirs.values():
        os.makedirs(path, exist_ok=True)
    return dirs


def _write_split(dirs: Dict[str, str], split: str, count: int,
                 onehot: Dict[str, np.ndarray], seed: int,
                 size: Tuple[int, int], class_ids: Sequence[int],
                 max_objects: int, border_width: int,
                 jpeg_quality: int) -> Dict[str, int]:
    """Draw and write the images, masks and split lists of one split.

    Adds each image's label vector to ``onehot``; returns images per class.
    """
    palette = [v for rgb in pascal_voc_palette() for v in rgb]
    names = []
    per_class = {VOC_CLASSES[c]: 0 for c in class_ids}
    for idx in range(count):
        name = f'{split}_{idx:05d}'
        rng = np.random.default_rng([seed, _SPLIT_CODES[split], idx])
        img, label = _draw_image(rng, *size, class_ids, max_objects,
                                 border_width)
        cv2.imwrite(
            osp.join(dirs['img'], name + '.jpg'), img[..., ::-1],
            [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        for key in ('seg', 'aug'):
            _save_palette_png(label, osp.join(dirs[key], name + '.png'),
                              palette)
        vec = np.zeros(len(VOC_CLASSES) - 1, np.uint8)
        for c in np.unique(label):
            if c not in (0, IGNORE_INDEX):
                vec[c - 1] = 1
                per_class[VOC_CLASSES[c]] += 1
        onehot[name] = vec
        names.append(name)
    for list_file in (['train.txt', 'aug.txt']
                      if split == 'train' else ['val.txt']):
        with open(osp.join(dirs['sets'], list_file), 'w') as f:
            f.write(''.join(n + '\n' for n in names))
    return per_class


def _checked_arguments(class_ids: Sequence[int],
                       img_size: Tuple[int, int]) -> List[int]:
    """``class_ids`` as ints, after checking that they are distinct keys of
    ``CLASS_STYLES`` and that ``img_size`` is at least 32x32."""
    class_ids = [int(c) for c in class_ids]
    if set(class_ids) - set(CLASS_STYLES) or not class_ids or len(
            set(class_ids)) != len(class_ids):
        raise ValueError(f'class_ids must be distinct ids from '
                         f'{sorted(CLASS_STYLES)}, got {class_ids}')
    if min(img_size) < 32:
        raise ValueError(f'img_size must be at least 32x32, got {img_size}')
    return class_ids


def _write_labels_and_summary(summary: dict,
                              onehot: Dict[str, np.ndarray]) -> dict:
    """Write the image-level label file and ``summary.json`` into
    ``summary['out_dir']``; returns ``summary`` with ``label_file``."""
    out_dir = summary['out_dir']
    # A pickle-free archive (one array per image name), not the pickled
    # dict .npy of the WSSS authors: loading it can never run code.
    label_file = osp.join(out_dir, 'cls_labels_onehot.npz')
    save_image_label_file(label_file, onehot)
    summary = dict(summary, label_file=label_file)
    with open(osp.join(out_dir, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    return summary


def generate_synthetic_voc(out_dir: str,
                           num_train: int = 200,
                           num_val: int = 50,
                           img_size: Tuple[int, int] = (128, 128),
                           seed: int = 0,
                           class_ids: Sequence[int] = DEFAULT_CLASS_IDS,
                           max_objects: int = 3,
                           border_width: int = 4,
                           jpeg_quality: int = 95) -> dict:
    """Write a synthetic PASCAL-VOC-layout WSSS dataset.

    Layout (as VOC 2012 + SBD "aug")::

        out_dir/
            JPEGImages/<name>.jpg
            SegmentationClass/<name>.png      # palette PNG, 255 = ignore
            SegmentationClassAug/<name>.png   # same masks
            ImageSets/Segmentation/{train,val,aug}.txt  # aug == train
            cls_labels_onehot.npz   # {name: uint8 multi-hot over 20 classes}
            summary.json

    Images (``train_00000``, ``val_00000``, ...) hold 1 to ``max_objects``
    objects of distinct classes and depend only on (seed, split, index): a
    larger ``num_train`` extends a smaller one. Files are overwritten.

    Args:
        out_dir (str): Output folder (created if needed).
        num_train (int): Training images (train and aug lists). Defaults
            to 200.
        num_val (int): Validation images. Defaults to 50.
        img_size (tuple[int, int]): Image (H, W). Defaults to (128, 128).
        seed (int): Random seed. Defaults to 0.
        class_ids (Sequence[int]): VOC class ids to draw, from
            ``CLASS_STYLES`` (1-6). Defaults to aeroplane, bicycle, bird, boat.
        max_objects (int): Most objects per image. Defaults to 3.
        border_width (int): Width in px of the 255 band on object
            contours; 0 disables it. Defaults to 4.
        jpeg_quality (int): JPEG quality. Defaults to 95.

    Returns:
        dict: What ``summary.json`` holds: ``out_dir``, the sizes, class ids
        and names, ``images_per_class`` (per split) and ``label_file``.

    Raises:
        ValueError: On unknown class ids or sizes too small to draw.
    """
    class_ids = _checked_arguments(class_ids, img_size)
    dirs, onehot = _make_dirs(out_dir), {}
    images_per_class = {
        split: _write_split(dirs, split, count, onehot, seed, tuple(img_size),
                            class_ids, max_objects, border_width, jpeg_quality)
        for split, count in (('train', num_train), ('val', num_val))
    }
    summary = dict(
        out_dir=out_dir, img_size=list(img_size), num_train=num_train,
        num_val=num_val, class_ids=class_ids,
        class_names=[VOC_CLASSES[c] for c in class_ids],
        images_per_class=images_per_class)
    return _write_labels_and_summary(summary, onehot)
