"""Build PASCAL VOC 2012 "train_aug" (VOC + SBD) for FSR.

Produces, inside ``VOCdevkit/VOC2012``::

    SegmentationClassAug/<name>.png   palette PNG, 0 = background, 1..20,
                                      255 = ignore; one per train_aug + val
                                      image (10,582 + 1,449 = 12,031)
    ImageSets/Segmentation/aug.txt    train_aug names, sorted (10,582)

Label sources, in order of preference: the official VOC 2012 mask
(``SegmentationClass``) for VOC train/val images, else the SBD mask
(``dataset/cls/<name>.mat`` from ``benchmark.tgz``, ``--sbd-path``) or a PNG of
an already downloaded ``SegmentationClassAug`` folder (``--aug-ann-dir``).

Examples::

    python tools/dataset_converters/voc_aug.py data/VOCdevkit \\
        --sbd-path data/benchmark_RELEASE --nproc 8
    python tools/dataset_converters/voc_aug.py data/VOCdevkit \\
        --aug-ann-dir data/SegmentationClassAug --nproc 8
"""
import argparse
import os
import os.path as osp
import shutil
import sys
from functools import partial
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmengine.utils import track_parallel_progress, track_progress
from PIL import Image

#: Split sizes of VOC 2012 + SBD (train_aug) used by the paper.
EXPECTED = {'train': 1464, 'val': 1449, 'aug': 10582, 'test': 1456}
NUM_CLASSES = 21  # background + 20 objects


def voc_palette() -> List[int]:
    """The 256-entry PASCAL VOC colour map, flattened to ``[r, g, b, ...]``.

    Returns:
        list[int]: 768 values for :meth:`PIL.Image.Image.putpalette`.
    """
    palette = []
    for label in range(256):
        r = g = b = 0
        c = label
        for shift in range(7, -1, -1):  # spread label bits over the colours
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


def read_sbd_mat(path: str) -> np.ndarray:
    """Read the class mask of one SBD ``cls/<name>.mat`` file.

    Args:
        path (str): The ``.mat`` file (struct ``GTcls`` with field
            ``Segmentation``).

    Returns:
        np.ndarray: ``uint8`` mask of shape (H, W), values in ``[0, 20]``.

    Raises:
        ValueError: If the file lacks ``GTcls.Segmentation`` or holds labels
            outside ``[0, 20]``.
    """
    from scipy.io import loadmat  # only this tool needs scipy

    try:
        gt = loadmat(path, squeeze_me=True, struct_as_record=False)['GTcls']
        mask = np.asarray(gt.Segmentation)
    except (KeyError, AttributeError) as e:
        raise ValueError(f'{path} has no GTcls.Segmentation') from e
    if mask.ndim != 2 or mask.min() < 0 or mask.max() >= NUM_CLASSES:
        raise ValueError(f'{path}: expected a 2-D mask with labels 0..20, got '
                         f'shape {mask.shape}, range '
                         f'[{mask.min()}, {mask.max()}]')
    return mask.astype(np.uint8)


def is_valid_png(path: str) -> bool:
    """Whether ``path`` is a fully decodable single-channel PNG."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.format == 'PNG' and img.mode in ('P', 'L')
    except (OSError, SyntaxError):
        return False


def make_label(task: Tuple[str, str], overwrite: bool = False) -> str:
    """Write one ``SegmentationClassAug`` PNG.

    Args:
        task (tuple[str, str]): ``(source, destination)``; a ``.mat`` source
            is converted, a ``.png`` source copied byte for byte.
        overwrite (bool): Rewrite a destination that is already valid.

    Returns:
        str: ``'written'`` or ``'skipped'``.

    Raises:
        ValueError: If the source is not a valid label file.
    """
    src, dst = task
    if not overwrite and is_valid_png(dst):
        return 'skipped'
    # Write next to the target and rename, so an interrupted run never
    # leaves a truncated PNG that a later run would have to detect.
    tmp = f'{dst}.tmp{os.getpid()}'
    if src.endswith('.mat'):
        img = Image.fromarray(read_sbd_mat(src))
        img.putpalette(voc_palette())  # 'L' -> 'P', like VOC's own PNGs
        img.save(tmp, format='PNG')
    elif is_valid_png(src):
        shutil.copyfile(src, tmp)
    else:
        raise ValueError(f'corrupt label PNG: {src}')
    os.replace(tmp, dst)
    return 'written'


def read_list(path: str) -> List[str]:
    """Read a split file: one image name per line, blanks ignored."""
    with open(path) as f:
        return [line.split()[0] for line in f if line.strip()]


def build_aug_list(voc_train: Sequence[str], voc_val: Sequence[str],
                   extra: Sequence[str]) -> List[str]:
    """train_aug = (VOC train | SBD train | SBD val) - VOC val, sorted.

    Args:
        voc_train (Sequence[str]): VOC 2012 segmentation train names.
        voc_val (Sequence[str]): VOC 2012 segmentation val names.
        extra (Sequence[str]): SBD train + val names (or the names of an
            existing SegmentationClassAug folder).

    Returns:
        list[str]: Sorted, so the file is identical on every run.
    """
    return sorted((set(voc_train) | set(extra)) - set(voc_val))


def _require(path: str, what: str) -> str:
    """Return ``path`` or exit with an error naming the missing item."""
    if not osp.exists(path):
        sys.exit(f'error: {what} not found: {path}')
    return path


def _sbd_dataset_dir(sbd_path: str) -> str:
    """Accept ``benchmark_RELEASE`` or ``benchmark_RELEASE/dataset``."""
    for cand in (osp.join(sbd_path, 'dataset'), sbd_path):
        if osp.isdir(osp.join(cand, 'cls')):
            return cand
    sys.exit(f'error: SBD folder not found: neither {sbd_path}/dataset/cls '
             f'nor {sbd_path}/cls exists (extract benchmark.tgz and pass its '
             'benchmark_RELEASE folder)')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse command-line arguments."""
    parser = argparse.ArgumentParser(
        description='Build VOC 2012 train_aug (VOC + SBD): '
        'VOC2012/SegmentationClassAug/*.png and '
        'VOC2012/ImageSets/Segmentation/aug.txt.')
    parser.add_argument(
        'devkit_path', help='VOCdevkit folder (contains VOC2012/)')
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument(
        '--sbd-path',
        help='extracted SBD benchmark.tgz (benchmark_RELEASE, with '
        'dataset/cls/*.mat, dataset/train.txt, dataset/val.txt)')
    src.add_argument(
        '--aug-ann-dir',
        help='an extracted SegmentationClassAug.zip folder of PNGs (may be '
        'the output folder itself)')
    parser.add_argument(
        '--out-dir',
        help='label output folder (default: '
        'DEVKIT/VOC2012/SegmentationClassAug)')
    parser.add_argument(
        '--nproc', type=int, default=1, help='worker processes (default 1)')
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help='rewrite labels that already exist and are valid')
    return parser.parse_args(argv)


def _report(counts: Dict[str, int]) -> None:
    """Print found vs expected split sizes; warn on any difference."""
    print(f'{"split":<8}{"found":>8}{"expected":>10}')
    for split, n in counts.items():
        print(f'{split:<8}{n:>8}{EXPECTED[split]:>10}')
    diff = [s for s, n in counts.items() if n != EXPECTED[s]]
    if diff:
        print(
            f'WARNING: split sizes differ from VOC 2012 + SBD for {diff}; '
            'the data is partial or not the official release, so results '
            'will not be comparable to the paper.',
            file=sys.stderr)


def main(argv: Optional[List[str]] = None) -> None:
    """Convert labels, write ``aug.txt`` and report the split sizes."""
    args = parse_args(argv)
    voc = _require(osp.join(args.devkit_path, 'VOC2012'), 'VOC2012 folder')
    img_dir = _require(osp.join(voc, 'JPEGImages'), 'image folder')
    voc_ann = _require(
        osp.join(voc, 'SegmentationClass'), 'VOC label folder')
    sets = _require(
        osp.join(voc, 'ImageSets', 'Segmentation'), 'split folder')
    voc_train = read_list(_require(osp.join(sets, 'train.txt'), 'split'))
    voc_val = read_list(_require(osp.join(sets, 'val.txt'), 'split'))

    # name -> label source for everything not covered by VOC itself
    if args.sbd_path:
        sbd = _sbd_dataset_dir(args.sbd_path)
        extra = (read_list(_require(osp.join(sbd, 'train.txt'), 'SBD split'))
                 + read_list(_require(osp.join(sbd, 'val.txt'), 'SBD split')))
        extra_src = {n: osp.join(sbd, 'cls', f'{n}.mat') for n in extra}
    else:
        aug_dir = _require(args.aug_ann_dir, 'SegmentationClassAug folder')
        extra_src = {
            f[:-4]: osp.join(aug_dir, f)
            for f in os.listdir(aug_dir) if f.endswith('.png')
        }
    out_dir = args.out_dir or osp.join(voc, 'SegmentationClassAug')
    os.makedirs(out_dir, exist_ok=True)

    aug = build_aug_list(voc_train, voc_val, list(extra_src))
    voc_names = set(voc_train) | set(voc_val)
    tasks, problems = [], {}
    for name in sorted(set(aug) | set(voc_val)):
        src = (osp.join(voc_ann, f'{name}.png')
               if name in voc_names else extra_src[name])
        dst = osp.join(out_dir, f'{name}.png')
        if not osp.isfile(osp.join(img_dir, f'{name}.jpg')):
            problems[name] = 'no image'
        elif not osp.isfile(src):
            problems[name] = f'no label {src}'
        elif osp.abspath(src) != osp.abspath(dst):  # else already in place
            tasks.append((src, dst))

    func = partial(make_label, overwrite=args.overwrite)
    if args.nproc > 1:
        status = track_parallel_progress(
            func, tasks, nproc=args.nproc, chunksize=16)
    else:
        status = track_progress(func, tasks)
    print(f'\n{out_dir}: {status.count("written")} written, '
          f'{status.count("skipped")} already valid')

    # Names without image or label would crash the dataset at load time, so
    # they leave aug.txt; VOC's own val.txt is never rewritten.
    for split, names in (('aug', aug), ('val', voc_val)):
        bad = [f'{n} ({problems[n]})' for n in names if n in problems]
        if bad:
            action = 'left out of aug.txt' if split == 'aug' else 'unusable'
            print(f'WARNING: {len(bad)} {split} images {action}, e.g. '
                  f'{bad[:3]}', file=sys.stderr)
    aug = [n for n in aug if n not in problems]
    with open(osp.join(sets, 'aug.txt'), 'w') as f:
        f.writelines(f'{n}\n' for n in aug)
    print(f'wrote {osp.join(sets, "aug.txt")}')

    counts = {'train': len(voc_train), 'val': len(voc_val), 'aug': len(aug)}
    test_list = osp.join(sets, 'test.txt')
    if osp.isfile(test_list):  # only with the separate VOC2012 test tar
        counts['test'] = len(read_list(test_list))
    _report(counts)


if __name__ == '__main__':
    main()
