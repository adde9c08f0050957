"""Data pre-processor that batches two-view WSSS samples."""
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.registry import MODELS
from torch import Tensor

from .utils import stack_image_labels


@MODELS.register_module()
class WSSSDataPreProcessor(SegDataPreProcessor):
    """``SegDataPreProcessor`` whose training batches always hold two views.

    - A sample packed by ``PackWSSSInputs`` from a multi-view pipeline is a
      (3V, H, W) tensor with the ``num_views`` meta; such a batch becomes
      (B, V, 3, H, W) after colour conversion and normalisation.
    - A training batch of a stock mmseg pipeline (B, 3, H, W) gets its
      second view here, on the device, in mmseg's batch-augment style: a
      random resized crop and flip of every image; and every sample without
      ``gt_class_labels`` gets the set of classes of its whole mask file
      (read once per file), not of the crop the pipeline made.
    - Validation and test batches go through ``SegDataPreProcessor``.

    Args:
        second_view (dict): ``scale`` (area fraction) and ``ratio`` (aspect
            ratio) ranges of the on-device crop of stock batches.
        num_classes (int, optional): Classes with background, for the labels
            of stock batches; ``FSRSegmentor`` fills it in.
        **kwargs: Arguments of ``SegDataPreProcessor``.
    """

    def __init__(self,
                 second_view: dict = dict(
                     scale=(0.32, 1.0), ratio=(3 / 4, 4 / 3)),
                 num_classes: Optional[int] = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.second_view = dict(second_view)
        self.num_classes = num_classes

    def forward(self, data: dict, training: bool = False) -> Dict[str, Any]:
        """Normalise, convert and stack a batch.

        Args:
            data (dict): Batch from the dataloader.
            training (bool): Whether this is a training batch.

        Returns:
            dict: ``inputs`` (B, 3, H, W), or (B, V, 3, H, W) for every
            training batch, and ``data_samples``.
        """
        if data['data_samples'][0].metainfo.get('num_views'):
            return self._stack_views(data)
        if training and self.size is None and self.size_divisor is None:
            raise ValueError(
                'WSSSDataPreProcessor got a single-view training batch (a '
                'stock mmseg pipeline) and has neither `size` nor '
                '`size_divisor` to pad it to: set data_preprocessor.size to '
                'the crop size, e.g. size=(448, 448), as mmseg configs do')
        data = super().forward(data, training)
        if training:
            data = self._add_second_view(data)
        return data

    def _stack_views(self, data: dict) -> Dict[str, Any]:
        data = self.cast_data(data)
        views = [
            image.unflatten(0, (sample.num_views, -1)) for image, sample in
            zip(data['inputs'], data['data_samples'])
        ]
        if len({tuple(v.shape) for v in views}) != 1:
            raise ValueError('all multi-view samples of a batch must have the '
                             'same number of views and crop size, got '
                             f'{sorted({tuple(v.shape) for v in views})}')
        inputs = torch.stack(views).float()
        if self.channel_conversion and inputs.shape[2] == 3:
            inputs = inputs[:, :, [2, 1, 0]]
        if self._enable_normalize:
            inputs = (inputs - self.mean) / self.std
        return dict(inputs=inputs, data_samples=data['data_samples'])

    def _add_second_view(self, data: dict) -> Dict[str, Any]:
        inputs, samples = data['inputs'], data['data_samples']
        if self.num_classes is None:
            raise ValueError('WSSSDataPreProcessor needs num_classes to read '
                             'image labels off the masks of a stock batch')
        labels = stack_image_labels(samples, self.num_classes,
                                    self.seg_pad_val, whole_mask=True)
        for sample, label in zip(samples, labels):
            sample.gt_class_labels = label
        views = torch.stack([inputs, self.random_view(inputs)], dim=1)
        return dict(inputs=views, data_samples=samples)

    def mean_std(self) -> Tuple[Tensor, Tensor]:
        """The normalisation, (3, 1, 1) each; (0, 1) without one."""
        if self._enable_normalize:
            return self.mean, self.std
        return torch.zeros(3, 1, 1), torch.ones(3, 1, 1)

    def random_view(self, inputs: Tensor) -> Tensor:
        """Random resized crop and flip of every image, on the device.

        Args:
            inputs (Tensor): Images, shape (B, 3, H, W).

        Returns:
            Tensor: Views of the same shape.
        """
        height, width = inputs.shape[-2:]
        scale_lo, scale_hi = self.second_view['scale']
        log_ratio = torch.tensor(self.second_view['ratio']).log()
        views = []
        for image in inputs:
            area = height * width * (scale_lo +
                                     (scale_hi - scale_lo) * torch.rand(1))
            ratio = torch.exp(log_ratio[0] +
                              (log_ratio[1] - log_ratio[0]) * torch.rand(1))
            crop_h = int(min(height, max(1, (area / ratio).sqrt().round())))
            crop_w = int(min(width, max(1, (area * ratio).sqrt().round())))
            top = int(torch.randint(height - crop_h + 1, ()))
            left = int(torch.randint(width - crop_w + 1, ()))
            view = image[None, :, top:top + crop_h, left:left + crop_w]
            view = F.interpolate(
                view, size=(height, width), mode='bilinear',
                align_corners=False)
            if torch.rand(1) < 0.5:
                view = view.flip(-1)
            views.append(view)
        return torch.cat(views)
