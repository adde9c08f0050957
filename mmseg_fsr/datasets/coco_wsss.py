"""MS COCO 2014 with VOC-style class masks, for weakly supervised segmentation.
"""
import os
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional

import mmcv
import mmengine.fileio as fileio
import numpy as np
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from .checks import DataIssue, DatasetCheckError
from .transforms.image_labels import class_ids_to_multi_hot
from .voc_wsss import WSSSDatasetMixin, pascal_voc_palette

COCO_CLASSES = (
    'background', 'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus',
    'train', 'truck', 'boat', 'traffic light', 'fire hydrant', 'stop sign',
    'parking meter', 'bench', 'bird', 'cat', 'dog', 'horse', 'sheep', 'cow',
    'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella', 'handbag',
    'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball', 'kite',
    'baseball bat', 'baseball glove', 'skateboard', 'surfboard',
    'tennis racket', 'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon',
    'bowl', 'banana', 'apple', 'sandwich', 'orange', 'broccoli', 'carrot',
    'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch', 'potted plant',
    'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote',
    'keyboard', 'cell phone', 'microwave', 'oven', 'toaster', 'sink',
    'refrigerator', 'book', 'clock', 'vase', 'scissors', 'teddy bear',
    'hair drier', 'toothbrush')

# Mask decoding releases the GIL, so threads give a near-linear speed-up.
_MASK_SCAN_THREADS = min(8, os.cpu_count() or 1)


@DATASETS.register_module()
class WSSSCOCODataset(WSSSDatasetMixin, BaseSegDataset):
    """COCO 2014 as 81 classes (background + 80 things) for WSSS.

    The masks are single-channel class PNGs rasterised from the instance
    annotations (value = class id 0..80, 255 = ignore), as used by ToCo and
    FSR; not COCO-Stuff. Typical layout::

        data_root/
            JPEGImages/{train2014,val2014}/<name>.jpg
            SegmentationClass/{train2014,val2014}/<name>.png
            train.txt, val.txt          # one <name> per line

    Args:
        ann_file (str): Split list (one name per line). Empty: use every
            image under ``data_prefix.img_path``. Defaults to ''.
        img_suffix (str): Image suffix. Defaults to '.jpg'.
        seg_map_suffix (str): Mask suffix. Defaults to '.png'.
        img_label_file (str, optional): {name: multi-hot of length 80} as
            ``.npz`` or pickled-dict ``.npy`` (read without running code),
            or ``.json`` {name: [class ids 1..80]}; gives every data info
            ``gt_class_labels``. Defaults to None.
        filter_empty_labels (bool): Drop images without any foreground
            class; WSSS training cannot use them. The labels come from
            ``img_label_file`` when given; otherwise every mask of the split
            is read and decoded once at dataset construction (threaded; about
            2 ms per 640x480 mask on 2 cores, i.e. minutes for the 82k COCO
            train masks), so pass a label file for large splits. Set False
            on evaluation splits, where such images still count for the
            background IoU. Defaults to True.
        verify_files (bool): At start-up, ``stat`` every listed image and
            mask (missing or 0-byte files are reported). Defaults to True.
        **kwargs: Other ``BaseSegDataset`` arguments.

    Raises:
        FileNotFoundError: If data_root, an image/mask directory, the split
            list or the label file is missing.
        DatasetCheckError: (a ``ValueError``) listing every bad entry:
            empty split list, duplicate ids, missing or empty files, an
            unreadable label file or images it lacks, and (mask scan)
            masks that cannot be read or hold out-of-range class ids.
        ValueError: If filtering needs masks but no ``seg_map_path`` is set.
    """
    METAINFO = dict(classes=COCO_CLASSES, palette=pascal_voc_palette(81))

    def __init__(self,
                 ann_file: str = '',
                 img_suffix: str = '.jpg',
                 seg_map_suffix: str = '.png',
                 img_label_file: Optional[str] = None,
                 filter_empty_labels: bool = True,
                 verify_files: bool = True,
                 **kwargs) -> None:
        self.filter_empty_labels = filter_empty_labels
        self.verify_files = verify_files
        self.img_label_file = self._check_paths(
            kwargs.get('data_root'),
            kwargs.get('data_prefix', dict(img_path='', seg_map_path='')),
            ann_file, img_label_file, kwargs.get('backend_args'),
            ann_file_required=False)
        super().__init__(
            ann_file=ann_file,
            img_suffix=img_suffix,
            seg_map_suffix=seg_map_suffix,
            **kwargs)

    def _mask_has_foreground(self, seg_map_path: str) -> bool:
        """Whether a mask holds a class, after the same id remapping
        ``LoadAnnotations`` applies (``reduce_zero_label``, ``label_map``)."""
        mask = mmcv.imfrombytes(
            fileio.get(seg_map_path, backend_args=self.backend_args),
            flag='unchanged', backend='pillow')
        ids = np.unique(mask).astype(np.int64)
        if self.reduce_zero_label:
            ids = np.where((ids == 0) | (ids == 255), 255, ids - 1)
        if self.label_map:
            ids = np.array([self.label_map.get(int(i), int(i)) for i in ids])
        return bool(
            class_ids_to_multi_hot(
                ids, len(self.metainfo['classes']),
                ignore_index=self.ignore_index, source=seg_map_path).any())

    def filter_data(self) -> List[dict]:
        """Drop images whose label set is empty (if enabled).

        Returns:
            list[dict]: Kept data infos.
        """
        data_list = super().filter_data()
        if not self.filter_empty_labels:
            return data_list
        if self.img_label_file:
            keep = [bool(info['gt_class_labels'].any()) for info in data_list]
        else:
            if any('seg_map_path' not in info for info in data_list):
                raise ValueError(
                    f'{type(self).__name__}: filter_empty_labels needs '
                    'image labels: set img_label_file or '
                    'data_prefix.seg_map_path')
            with ThreadPoolExecutor(_MASK_SCAN_THREADS) as pool:
                scanned = list(
                    pool.map(self._scan_mask,
                             [info['seg_map_path'] for info in data_list]))
            issues = [issue for _, issue in scanned if issue is not None]
            if issues:
                raise DatasetCheckError(
                    f'{type(self).__name__} ({self.ann_file or "masks"}) '
                    'mask scan', issues)
            keep = [k for k, _ in scanned]
        return [info for info, k in zip(data_list, keep) if k]

    def _scan_mask(self, seg_map_path: str):
        """``(has foreground, None)`` or ``(False, DataIssue)``."""
        try:
            return self._mask_has_foreground(seg_map_path), None
        except Exception as err:  # unreadable mask or bad class id
            return False, DataIssue(
                seg_map_path, f'{type(err).__name__}: {err}'
                if not isinstance(err, ValueError) else str(err))
