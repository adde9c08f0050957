"""Checks of a segmentation data set's files, reported all at once.

Two depths:

- **fast** (run by ``WSSSVOCDataset`` / ``WSSSCOCODataset`` when they are
  built, i.e. before training starts): the split list is read line by line
  (empty list, duplicate ids, blank lines), every listed image and mask is
  ``stat``-ed (missing or 0-byte files), the sizes of local files are read
  from their headers (unrecognised files, images under 16 px, masks of
  another size than their image) and the image-label file is parsed and
  must cover every image. No pixel is decoded; on 10,582 entries (VOC
  train_aug) this took 2.6-5.4 s on 2 shared cores (docs/faults.md).
- **full** (``tools/check_dataset.py CONFIG --full``): additionally decodes
  every image and mask as the pipeline does, and checks sizes, the class
  ids found in the masks and that training images have a foreground class.

Every problem becomes a :class:`DataIssue` (file path + reason), and the
caller raises one :class:`DatasetCheckError` that lists them all.
"""
import io
import logging
import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, List, NamedTuple, Optional, Sequence, Tuple

import mmcv
import mmengine.fileio as fileio
import numpy as np
from mmengine.logging import print_log
from PIL import Image

# Smallest image side accepted by the full check. A 1-px side breaks the
# loaders (mmcv returns a 1-D array for a 1-px-wide mask); 2..15 px would
# pass the pipeline but hold less than one 16-px ViT patch at native size,
# which only happens with broken or placeholder files (VOC and COCO images
# are >= 100 px).
MIN_IMAGE_SIDE = 16
# Longest list an exception message prints; check_dataset.py prints all.
MAX_LISTED_ISSUES = 200


class DataIssue(NamedTuple):
    """One problem with one file."""
    path: str
    reason: str

    def __str__(self) -> str:
        return self.reason if self.path in self.reason \
            else f'{self.path}: {self.reason}'


def format_issues(issues: Sequence[DataIssue],
                  limit: Optional[int] = MAX_LISTED_ISSUES) -> str:
    """One line per issue, indented; at most ``limit`` lines."""
    shown = issues if limit is None else issues[:limit]
    lines = [f'  {issue}' for issue in shown]
    if len(issues) > len(shown):
        lines.append(f'  ... and {len(issues) - len(shown)} more (python '
                     'tools/check_dataset.py CONFIG lists all of them)')
    return '\n'.join(lines)


class DatasetCheckError(ValueError):
    """A data set has bad entries; ``issues`` lists every one of them.

    Args:
        title (str): What was checked, e.g. the data set and split list.
        issues (Sequence[DataIssue]): The problems found.
    """

    def __init__(self, title: str, issues: Sequence[DataIssue]) -> None:
        self.issues = list(issues)
        super().__init__(
            f'{title}: {len(self.issues)} problem(s), each with its file:\n'
            f'{format_issues(self.issues)}\n'
            'Fix or remove these entries before training; `python '
            'tools/check_dataset.py CONFIG --full` also decodes every file.')


class SplitFile(NamedTuple):
    """The parsed split list (``ann_file``)."""
    names: List[str]           # one per non-blank line, stripped
    line_numbers: List[int]    # 1-based line of each name
    blank_lines: List[int]     # 1-based lines that were blank (ignored)
    issues: List[DataIssue]


def read_split_file(path: str,
                    backend_args: Optional[dict] = None) -> SplitFile:
    """Read a split list: one image id per line.

    Blank lines are ignored (their numbers are returned so that callers can
    warn): they carry no id, and a trailing newline or two is the most
    common editor artefact. An id listed twice is an issue: it would be
    trained on twice as often without anyone noticing (use mmengine's
    ``RepeatDataset`` / ``ClassBalancedDataset`` to oversample on purpose).
    An empty list is an issue too.

    Args:
        path (str): Split list path.
        backend_args (dict, optional): mmengine file backend arguments.

    Returns:
        SplitFile: Names, their line numbers, blank lines and issues.
    """
    try:
        text = fileio.get_text(path, backend_args=backend_args)
    except UnicodeDecodeError as err:
        return SplitFile([], [], [], [
            DataIssue(path, f'split list is not a text file ({err})')
        ])
    names, numbers, blank, issues = [], [], [], []
    first_seen = {}
    # Lines as mmengine.list_from_file (and so mmseg) splits them.
    for number, line in enumerate(io.StringIO(text), start=1):
        name = line.strip()
        if not name:
            blank.append(number)
            continue
        if name in first_seen:
            issues.append(
                DataIssue(
                    path, f'line {number}: id {name!r} is listed again '
                    f'(first on line {first_seen[name]})'))
            continue
        first_seen[name] = number
        names.append(name)
        numbers.append(number)
    if not names:
        what = 'is empty' if not text else 'has only blank lines'
        issues.append(DataIssue(path, f'split list {what}: no image listed'))
    return SplitFile(names, numbers, blank, issues)


def warn_blank_lines(path: str, blank_lines: Sequence[int]) -> None:
    """Warn once that blank lines of a split list were ignored: in the
    run's log (mmengine's current logger) and as a ``UserWarning`` (which
    ``tools/check_dataset.py`` collects)."""
    if blank_lines:
        shown = ', '.join(map(str, blank_lines[:10]))
        more = ', ...' if len(blank_lines) > 10 else ''
        message = (f'{path}: ignored {len(blank_lines)} blank line(s) '
                   f'(line {shown}{more})')
        print_log(message, logger='current', level=logging.WARNING)
        warnings.warn(message, stacklevel=2)


def is_local(path: str, backend_args: Optional[dict]) -> bool:
    return isinstance(
        fileio.get_file_backend(path, backend_args=backend_args),
        fileio.LocalBackend)


FILE_KEYS = (('img_path', 'image'), ('seg_map_path', 'mask'))


def _too_small(img_path: str, width: int, height: int,
               min_side: int) -> List[DataIssue]:
    if min(width, height) >= min_side:
        return []
    return [
        DataIssue(
            img_path, f'image is {width}x{height} px (width x height); the '
            f'smallest side must be at least {min_side} px')
    ]


def _size_mismatch(img_path: str, img_size: Tuple[int, int], seg_path: str,
                   mask_size: Tuple[int, int]) -> List[DataIssue]:
    """Sizes as (width, height)."""
    if tuple(img_size) == tuple(mask_size):
        return []
    return [
        DataIssue(
            seg_path, f'mask is {mask_size[0]}x{mask_size[1]} px but its '
            f'image {img_path} is {img_size[0]}x{img_size[1]}')
    ]


def read_header_size(path: str) -> Tuple[int, int]:
    """(width, height) of an image file from its header.

    Pillow opens lazily: only the header is parsed, no pixel is decoded.

    Raises:
        OSError: If pillow does not recognise the file (``UnidentifiedImage
            Error`` is an ``OSError``).
    """
    with Image.open(path) as image:
        return image.size


def check_headers(info: dict,
                  min_side: int = MIN_IMAGE_SIDE,
                  keys: Sequence[Tuple[str, str]] = FILE_KEYS,
                  sizes_only: bool = False) -> List[DataIssue]:
    """Sizes of one sample's local files, read from their headers.

    Args:
        info (dict): Data info with ``img_path`` and maybe ``seg_map_path``.
        min_side (int): Smallest image side accepted.
        keys (Sequence[tuple[str, str]]): Image and mask keys, with the
            word used in messages.
        sizes_only (bool): Skip files whose header is unreadable (the
            decoder then reports them) instead of reporting them.

    Returns:
        list[DataIssue]: Unrecognised headers, an image side under
        ``min_side``, a mask whose size differs from its image.
    """
    issues, sizes = [], {}
    for key, what in keys:
        path = info.get(key)
        if not path:
            continue
        try:
            sizes[key] = read_header_size(path)
        except OSError as err:
            if sizes_only:
                continue
            # pillow's messages repeat the path; the issue names it
            why = getattr(err, 'strerror', None) or type(err).__name__
            issues.append(
                DataIssue(path, f'{what} header unreadable ({why}): not '
                          'an image file pillow recognises'))
    (img_key, _), (seg_key, _) = keys
    if img_key in sizes:
        issues.extend(_too_small(info[img_key], *sizes[img_key], min_side))
        if seg_key in sizes:
            issues.extend(
                _size_mismatch(info[img_key], sizes[img_key], info[seg_key],
                               sizes[seg_key]))
    return issues


def check_files_exist(data_list: Iterable[dict],
                      backend_args: Optional[dict] = None,
                      keys: Sequence[Tuple[str, str]] = FILE_KEYS,
                      read_headers: bool = True) -> List[DataIssue]:
    """The fast check: every listed file exists, is not empty and (local
    files) has an image header whose size fits.

    One ``os.stat`` and one header read (:func:`check_headers`) per local
    file (``fileio.exists`` for other backends); no pixel is decoded.

    Args:
        data_list (Iterable[dict]): Data infos.
        backend_args (dict, optional): mmengine file backend arguments.
        keys (Sequence[tuple[str, str]]): Data info keys holding paths, with
            the word used in messages.
        read_headers (bool): Read the sizes of local files from their
            headers. Defaults to True.

    Returns:
        list[DataIssue]: Missing and 0-byte files, unreadable headers,
        images under ``MIN_IMAGE_SIDE`` px, every mask whose size differs
        from its image's.
    """
    issues = []
    local = None
    for info in data_list:
        present = {}
        for key, what in keys:
            path = info.get(key)
            if not path:
                continue
            if local is None:
                local = is_local(path, backend_args)
            if local:
                try:
                    size = os.stat(path).st_size
                except FileNotFoundError:
                    issues.append(DataIssue(path, f'{what} file missing'))
                    continue
                except OSError as err:
                    issues.append(
                        DataIssue(path, f'{what} file unreadable ({err})'))
                    continue
                if size == 0:
                    issues.append(
                        DataIssue(path, f'{what} file is empty (0 bytes)'))
                    continue
                present[key] = path
            elif not fileio.exists(path, backend_args=backend_args):
                issues.append(DataIssue(path, f'{what} file missing'))
        if local and read_headers and present:
            issues.extend(check_headers(present, keys=keys))
    return issues


class SampleSpec(NamedTuple):
    """What the full check needs to know about a data set."""
    num_classes: int
    ignore_index: int = 255
    reduce_zero_label: bool = False
    label_map: Optional[dict] = None
    min_side: int = MIN_IMAGE_SIDE
    require_foreground: bool = False
    background_index: Optional[int] = 0


def _decode(path: str, flag: str, backend: str,
            backend_args: Optional[dict]) -> Tuple[Optional[np.ndarray], str]:
    try:
        data = fileio.get(path, backend_args=backend_args)
    except FileNotFoundError:
        return None, 'file missing'
    except OSError as err:
        return None, f'unreadable ({err})'
    if not data:
        return None, 'file is empty (0 bytes)'
    try:
        array = mmcv.imfrombytes(data, flag=flag, backend=backend)
    except Exception as err:  # cv2.error, PIL.UnidentifiedImageError, ...
        return None, f'cannot be decoded ({type(err).__name__}: ' \
            f'{str(err).strip().splitlines()[-1] if str(err) else ""})'
    if array is None or array.size == 0:
        return None, 'cannot be decoded (not an image, or truncated)'
    return array, ''


def check_sample(info: dict,
                 spec: SampleSpec,
                 backend_args: Optional[dict] = None) -> List[DataIssue]:
    """The full check of one sample: decode it as the pipeline does.

    The image is decoded like ``LoadImageFromFile`` (cv2, colour), the mask
    like ``LoadAnnotations`` (pillow, unchanged).

    Args:
        info (dict): Data info with ``img_path`` and maybe ``seg_map_path``
            and ``gt_class_labels``.
        spec (SampleSpec): Class count, ignore index, minimum size, ...
        backend_args (dict, optional): mmengine file backend arguments.

    Returns:
        list[DataIssue]: This sample's problems.
    """
    issues = []
    img_path = info['img_path']
    img, why = _decode(img_path, 'color', 'cv2', backend_args)
    if img is None:
        issues.append(DataIssue(img_path, f'image {why}'))
    else:
        issues.extend(
            _too_small(img_path, img.shape[1], img.shape[0], spec.min_side))
    seg_path = info.get('seg_map_path')
    if not seg_path:
        return issues
    mask, why = _decode(seg_path, 'unchanged', 'pillow', backend_args)
    if mask is None:
        issues.append(DataIssue(seg_path, f'mask {why}'))
        return issues
    if mask.ndim != 2:
        issues.append(
            DataIssue(
                seg_path, f'mask has shape {mask.shape}; expected a '
                'single-channel class-id PNG (palette or grey), one value '
                'per pixel'))
        return issues
    if img is not None:
        issues.extend(
            _size_mismatch(img_path, img.shape[1::-1], seg_path,
                           mask.shape[::-1]))
    issues.extend(_check_mask_classes(mask, seg_path, info, spec))
    return issues


def _check_mask_classes(mask: np.ndarray, seg_path: str, info: dict,
                        spec: SampleSpec) -> List[DataIssue]:
    """Class ids of a decoded mask in range; a foreground class if needed."""
    ids = np.unique(mask).astype(np.int64)
    if spec.reduce_zero_label:
        ids = np.where((ids == 0) | (ids == 255), 255, ids - 1)
    if spec.label_map:
        ids = np.array([spec.label_map.get(int(i), int(i)) for i in ids])
    valid = (ids == spec.ignore_index) | ((ids >= 0) &
                                          (ids < spec.num_classes))
    if not valid.all():
        return [
            DataIssue(
                seg_path, f'class id(s) {ids[~valid].tolist()} outside '
                f'0..{spec.num_classes - 1} (ignore {spec.ignore_index}): '
                'wrong class count, or a colour mask instead of class ids')
        ]
    if not spec.require_foreground:
        return []
    if 'gt_class_labels' in info:
        has_fg = bool(np.asarray(info['gt_class_labels']).any())
    else:
        background = -1 if spec.background_index is None else \
            spec.background_index
        has_fg = bool(((ids != spec.ignore_index) & (ids != background)).any())
    if has_fg:
        return []
    return [
        DataIssue(
            seg_path, 'no foreground class; the training pipeline '
            '(GenerateImageLabels, allow_empty=False) would stop on this '
            'image')
    ]


def check_samples(data_list: Sequence[dict],
                  spec: SampleSpec,
                  backend_args: Optional[dict] = None,
                  workers: int = 4,
                  progress: bool = True) -> List[DataIssue]:
    """:func:`check_sample` on every sample, threaded, with a progress bar.

    Decoding releases the GIL, so threads scale with the cores.

    Args:
        data_list (Sequence[dict]): Data infos.
        spec (SampleSpec): See :func:`check_sample`.
        backend_args (dict, optional): mmengine file backend arguments.
        workers (int): Threads. Defaults to 4.
        progress (bool): Show an mmengine progress bar. Defaults to True.

    Returns:
        list[DataIssue]: Problems, in data list order.
    """
    from mmengine.utils import ProgressBar

    bar = ProgressBar(len(data_list), file=sys.stdout) \
        if progress and data_list else None
    issues = []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for found in pool.map(lambda info: check_sample(
                info, spec, backend_args), data_list):
            issues.extend(found)
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.file.write('\n')
    return issues


def describe_sample(data_info: dict) -> str:
    """``image X, mask Y`` of a data info, for error notes."""
    parts = [f'image {data_info.get("img_path")}']
    if data_info.get('seg_map_path'):
        parts.append(f'mask {data_info["seg_map_path"]}')
    return ', '.join(parts)


__all__ = [
    'DataIssue', 'DatasetCheckError', 'MIN_IMAGE_SIDE', 'SampleSpec',
    'SplitFile', 'check_files_exist', 'check_headers', 'check_sample',
    'check_samples', 'is_local', 'read_header_size',
    'describe_sample', 'format_issues', 'read_split_file', 'warn_blank_lines'
]
