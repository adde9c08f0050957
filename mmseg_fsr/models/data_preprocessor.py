"""Data pre-processor that also batches multi-view (two-crop) samples."""
from typing import Any, Dict

import torch
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.registry import MODELS


@MODELS.register_module()
class WSSSDataPreProcessor(SegDataPreProcessor):
    """``SegDataPreProcessor`` that accepts samples holding several views.

    A sample packed by ``PackWSSSInputs`` from a multi-view pipeline is a
    (V, 3, H, W) tensor; such a batch becomes (B, V, 3, H, W) after colour
    conversion and normalisation. Single-view samples (any stock mmseg
    pipeline, validation, testing) go through ``SegDataPreProcessor``
    unchanged.
    """

    def forward(self, data: dict, training: bool = False) -> Dict[str, Any]:
        """Normalise, convert and stack a batch.

        Args:
            data (dict): Batch from the dataloader.
            training (bool): Whether this is a training batch.

        Returns:
            dict: ``inputs`` (B, 3, H, W) or (B, V, 3, H, W) and
            ``data_samples``.
        """
        if data['inputs'][0].dim() != 4:
            return super().forward(data, training)
        data = self.cast_data(data)
        views = data['inputs']
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
