"""Image-level label vectors of a batch of data samples."""
import functools
from typing import Tuple

import mmcv
import mmengine.fileio as fileio
import numpy as np
import torch
from torch import Tensor

from ...datasets.transforms.image_labels import class_ids_to_multi_hot


@functools.lru_cache(maxsize=None)
def whole_mask_class_ids(seg_map_path: str,
                         reduce_zero_label: bool = False) -> Tuple[int, ...]:
    """The class ids of a whole mask file, read once per file and process.

    A stock mmseg training pipeline crops the mask before the model sees
    it, and a crop may cut classes out (or leave background only); the
    image-level label of WSSS is the set of classes of the whole image.

    Args:
        seg_map_path (str): The mask file (``seg_map_path`` of the sample).
        reduce_zero_label (bool): As mmseg's ``LoadAnnotations``.

    Returns:
        tuple[int]: The sorted ids, ignore value included.
    """
    mask = mmcv.imfrombytes(
        fileio.get(seg_map_path), flag='unchanged', backend='pillow')
    ids = np.unique(mask).astype(np.int64)
    if reduce_zero_label:  # 0 -> 255, c -> c - 1, as LoadAnnotations does
        ids = np.where((ids == 0) | (ids == 255), 255, ids - 1)
    return tuple(sorted(set(ids.tolist())))


def stack_image_labels(data_samples: list,
                       num_classes: int,
                       ignore_index: int = 255,
                       allow_empty: bool = False,
                       whole_mask: bool = False) -> Tensor:
    """The multi-hot foreground labels of a batch, checked.

    A sample's ``gt_class_labels`` is used as it is; without one, the label
    is the set of classes of its ``gt_sem_seg`` (a stock mmseg pipeline),
    read by the same function as the ``GenerateImageLabels`` transform.

    Args:
        data_samples (list[SegDataSample]): The batch.
        num_classes (int): Number of classes, background included.
        ignore_index (int): Mask value that is no class.
        allow_empty (bool): Accept images without a foreground class (valid
            when scoring CAMs, not for training from image labels).
        whole_mask (bool): Without ``gt_class_labels``, read the classes of
            the whole mask file (``seg_map_path``, see
            :func:`whole_mask_class_ids`) rather than of the possibly
            cropped ``gt_sem_seg``, where the sample names one.

    Returns:
        Tensor: Shape (B, num_classes - 1), float.

    Raises:
        ValueError: On a label vector of the wrong length, a mask class
            beyond ``num_classes``, an empty label set (unless allowed) or a
            sample with no label at all; the message names the image.
    """
    labels = []
    for sample in data_samples:
        path = sample.metainfo.get('img_path', '<unknown image>')
        if 'gt_class_labels' in sample:
            label = sample.gt_class_labels.float()
            if label.numel() != num_classes - 1:
                raise ValueError(
                    f'wrong class count: {path} has a label vector of '
                    f'{label.numel()} classes, the model has '
                    f'{num_classes - 1} foreground classes')
        elif whole_mask and sample.metainfo.get('seg_map_path'):
            seg_map_path = sample.metainfo['seg_map_path']
            label = torch.from_numpy(
                class_ids_to_multi_hot(
                    whole_mask_class_ids(
                        seg_map_path,
                        bool(sample.metainfo.get('reduce_zero_label'))),
                    num_classes, ignore_index=ignore_index,
                    source=seg_map_path))
        elif 'gt_sem_seg' in sample:
            mask = sample.gt_sem_seg.data
            label = torch.from_numpy(
                class_ids_to_multi_hot(
                    mask.unique().tolist(), num_classes,
                    ignore_index=ignore_index,
                    source=f'the mask of {path}')).to(mask.device)
        else:
            raise ValueError(f'{path} has neither gt_class_labels nor '
                             'gt_sem_seg: no image-level label')
        if not (allow_empty or label.any()):
            raise ValueError(f'empty label set: {path} has no foreground '
                             'class; WSSS training needs at least one')
        labels.append(label)
    return torch.stack(labels)
