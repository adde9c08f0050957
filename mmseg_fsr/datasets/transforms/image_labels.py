"""Image-level (multi-hot) class labels for weakly supervised segmentation.

WSSS trains from the *set* of classes in an image only. On PASCAL VOC and
COCO that set is read off the ground-truth mask (background and the ignore
value excluded), or taken from a precomputed label file such as ToCo's
``cls_labels_onehot.npy``. This module holds both routes plus the transform
that puts the vector into the pipeline results.
"""
import io
import os.path as osp
from typing import Dict, Iterable, Optional

import mmengine
import mmengine.fileio as fileio
import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS


def foreground_class_ids(num_classes: int,
                         background_index: Optional[int] = 0) -> np.ndarray:
    """Class ids that get a slot in the multi-hot vector, in slot order.

    Args:
        num_classes (int): Number of classes including background.
        background_index (int, optional): Background class id, which gets no
            slot. ``None`` means the dataset has no background class.
            Defaults to 0.

    Returns:
        np.ndarray: Foreground class ids; slot ``i`` is class ``ids[i]`` (for
        ``background_index=0`` slot ``c - 1`` is class ``c``).
    """
    ids = np.arange(num_classes)
    return ids[ids != background_index] if background_index is not None \
        else ids


def class_ids_to_multi_hot(class_ids: Iterable[int],
                           num_classes: int,
                           background_index: Optional[int] = 0,
                           ignore_index: int = 255,
                           source: str = '<unknown>') -> np.ndarray:
    """Turn a set of class ids into a float32 foreground multi-hot vector.

    Background and ``ignore_index`` are dropped silently; any other id that
    is not a valid class is an error, because it means the dataset's class
    count does not match the annotation (e.g. COCO masks with a VOC config).

    Args:
        class_ids (Iterable[int]): Class ids present in an image.
        num_classes (int): Number of classes including background.
        background_index (int, optional): Background id. Defaults to 0.
        ignore_index (int): Ignored label value. Defaults to 255.
        source (str): File or image the ids came from, for error messages.

    Returns:
        np.ndarray: float32 vector of length ``num_classes - 1`` (or
        ``num_classes`` when ``background_index`` is None).

    Raises:
        ValueError: If an id is negative or ``>= num_classes``.
    """
    fg_ids = foreground_class_ids(num_classes, background_index)
    slot = {int(c): i for i, c in enumerate(fg_ids)}
    labels = np.zeros(len(fg_ids), dtype=np.float32)
    for c in class_ids:
        c = int(c)
        if c == ignore_index or c == background_index:
            continue
        if c not in slot:
            raise ValueError(
                f'wrong class count: found class {c} in {source} but '
                f'num_classes={num_classes} (valid ids 0..{num_classes - 1}, '
                f'ignore {ignore_index})')
        labels[slot[c]] = 1.0
    return labels


def load_image_label_file(path: str,
                          num_classes: int,
                          background_index: Optional[int] = 0,
                          backend_args: Optional[dict] = None
                          ) -> Dict[str, np.ndarray]:
    """Load precomputed image-level labels.

    Two formats are accepted:

    - ``.npy``: a pickled dict ``{image name: multi-hot vector}`` over the
      foreground classes (ToCo's ``cls_labels_onehot.npy``);
    - ``.json``: ``{image name: [class ids]}`` with ids in the dataset's
      class numbering (1..20 on VOC, 1..80 on COCO).

    Args:
        path (str): Label file path.
        num_classes (int): Number of classes including background.
        background_index (int, optional): Background id. Defaults to 0.
        backend_args (dict, optional): mmengine file backend arguments.

    Returns:
        dict[str, np.ndarray]: Image name -> float32 multi-hot vector.

    Raises:
        ValueError: On an unknown suffix, a malformed file, or a vector or id
            that does not fit ``num_classes``.
    """
    num_fg = len(foreground_class_ids(num_classes, background_index))
    suffix = osp.splitext(path)[1].lower()
    if suffix == '.npy':
        raw = np.load(
            io.BytesIO(fileio.get(path, backend_args=backend_args)),
            allow_pickle=True)
        # np.save on a dict stores a 0-d object array around it.
        raw = raw.item() if raw.dtype == object and raw.ndim == 0 else raw
        if not isinstance(raw, dict):
            raise ValueError(f'image label file {path} must hold a dict '
                             f'{{image name: multi-hot vector}}, got '
                             f'{type(raw).__name__}')
        labels = {}
        for name, vec in raw.items():
            vec = np.asarray(vec, dtype=np.float32).reshape(-1)
            if vec.shape[0] != num_fg:
                raise ValueError(
                    f'image label file {path}: entry {name!r} has '
                    f'{vec.shape[0]} classes but the dataset has {num_fg} '
                    f'foreground classes (num_classes={num_classes})')
            labels[str(name)] = vec
        return labels
    if suffix == '.json':
        raw = mmengine.load(path, file_format='json',
                            backend_args=backend_args)
        if not isinstance(raw, dict):
            raise ValueError(f'image label file {path} must hold a dict '
                             f'{{image name: [class ids]}}')
        return {
            str(name): class_ids_to_multi_hot(
                ids, num_classes, background_index,
                source=f'image label file {path} (entry {name!r})')
            for name, ids in raw.items()
        }
    raise ValueError(f'image label file {path} must be a .npy or .json file')


@TRANSFORMS.register_module()
class GenerateImageLabels(BaseTransform):
    """Derive the image-level class labels from the full mask.

    Put it right after ``LoadAnnotations`` and before any crop: the labels
    must be the classes of the *whole* image, as in the WSSS protocol, and a
    crop may cut classes out. After this transform only
    ``gt_class_labels`` is meant to reach the training losses.

    If the dataset already supplied ``gt_class_labels`` (from a label file)
    they are kept, only validated; the mask is then not read here.

    Required Keys:

    - gt_seg_map (unless gt_class_labels is present)

    Added Keys:

    - gt_class_labels (np.float32, shape (num_classes - 1,))

    Args:
        num_classes (int): Number of classes including background.
            Defaults to 21 (PASCAL VOC).
        ignore_index (int): Mask value that is not a class. Defaults to 255.
        background_index (int, optional): Background class id; it gets no
            slot. ``None`` for datasets without background. Defaults to 0.
        allow_empty (bool): Accept images without any foreground class.
            Defaults to False, since such images carry no training signal
            for a multi-label classifier and hint at a broken dataset.
    """

    def __init__(self,
                 num_classes: int = 21,
                 ignore_index: int = 255,
                 background_index: Optional[int] = 0,
                 allow_empty: bool = False) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.background_index = background_index
        self.allow_empty = allow_empty
        self.num_fg = len(foreground_class_ids(num_classes, background_index))

    def transform(self, results: dict) -> dict:
        """Add ``gt_class_labels`` to ``results``.

        Args:
            results (dict): Pipeline results.

        Returns:
            dict: ``results`` with ``gt_class_labels``.

        Raises:
            KeyError: If neither labels nor a mask are available.
            ValueError: On a class count mismatch or an empty label set.
        """
        source = results.get('seg_map_path') or results.get(
            'img_path', '<unknown image>')
        if 'gt_class_labels' in results:
            labels = np.asarray(
                results['gt_class_labels'], dtype=np.float32).reshape(-1)
            if labels.shape[0] != self.num_fg:
                raise ValueError(
                    f'wrong class count: gt_class_labels of '
                    f'{results.get("img_path", source)} has {labels.shape[0]} '
                    f'entries but num_classes={self.num_classes} needs '
                    f'{self.num_fg}')
        elif 'gt_seg_map' in results:
            labels = class_ids_to_multi_hot(
                np.unique(results['gt_seg_map']), self.num_classes,
                self.background_index, self.ignore_index, source=source)
        else:
            raise KeyError('GenerateImageLabels needs `gt_seg_map`: place it '
                           'right after LoadAnnotations (image '
                           f'{results.get("img_path", source)})')
        if not self.allow_empty and not labels.any():
            raise ValueError(
                f'{source} has no foreground class; WSSS training needs at '
                'least one (filter such images out of the split, or set '
                'allow_empty=True)')
        results['gt_class_labels'] = labels
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_classes={self.num_classes}, '
                f'ignore_index={self.ignore_index}, '
                f'background_index={self.background_index}, '
                f'allow_empty={self.allow_empty})')
