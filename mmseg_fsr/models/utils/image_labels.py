"""Image-level label vectors of a batch of data samples."""
import torch
from torch import Tensor

from ...datasets.transforms.image_labels import class_ids_to_multi_hot


def stack_image_labels(data_samples: list,
                       num_classes: int,
                       ignore_index: int = 255,
                       allow_empty: bool = False) -> Tensor:
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
