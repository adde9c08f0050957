"""Packing of WSSS samples: image(s) plus image-level labels only."""
from typing import Sequence

import numpy as np
import torch
from mmcv.transforms import to_tensor
from mmseg.datasets.transforms import PackSegInputs
from mmseg.registry import TRANSFORMS


def _image_to_chw(img: np.ndarray) -> torch.Tensor:
    """Convert an (H, W[, C]) array into a contiguous (C, H, W) tensor."""
    if img.ndim < 3:
        img = img[..., None]
    return to_tensor(np.ascontiguousarray(img.transpose(2, 0, 1)))


@TRANSFORMS.register_module()
class PackWSSSInputs(PackSegInputs):
    """Pack a WSSS training or CAM-evaluation sample.

    Differences from ``PackSegInputs``:

    - ``results['img']`` may be a list of views (``WSSSMultiView``); they
      are concatenated along the channel axis into one (3V, H, W) tensor
      with the ``num_views`` meta, so that a sample stays the (C, H, W)
      image every mmseg tool expects (``browse_dataset.py`` shows view 1);
      ``WSSSDataPreProcessor`` splits the views again. The ``img_shape``
      meta becomes the views' (H, W), since the crop leaves the pre-crop
      shape in ``results``;
    - ``gt_class_labels`` becomes the float tensor data field
      ``data_sample.gt_class_labels`` of shape (num_fg_classes,);
    - ``gt_seg_map`` is dropped unless ``pack_seg_map=True``, so that pixel
      labels cannot reach the training losses by accident. Enable it only on
      splits where CAMs or predictions are evaluated (with views, the packed
      mask is the uncropped one: ``MultiView`` only crops ``img``). A
      multi-view sample without it gets an all-``ignore_index``
      ``gt_sem_seg`` of the views' size instead: no pixel label, but a
      sample mmseg's visualiser can draw (``browse_dataset.py``;
      ``WSSSLocalVisualizer`` shows it as the bare image).

    Args:
        meta_keys (Sequence[str]): Meta keys to collect, as in
            ``PackSegInputs``.
        pack_seg_map (bool): Pack ``gt_seg_map`` as ``gt_sem_seg``.
            Defaults to False.
        ignore_index (int): Value of the label-free ``gt_sem_seg`` of
            multi-view samples. Defaults to 255.
    """

    def __init__(self,
                 meta_keys: Sequence[str] = (
                     'img_path', 'seg_map_path', 'ori_shape', 'img_shape',
                     'pad_shape', 'scale_factor', 'flip', 'flip_direction',
                     'reduce_zero_label'),
                 pack_seg_map: bool = False,
                 ignore_index: int = 255) -> None:
        super().__init__(meta_keys=meta_keys)
        self.pack_seg_map = pack_seg_map
        self.ignore_index = ignore_index

    def transform(self, results: dict) -> dict:
        """Pack ``results`` into ``inputs`` and ``data_samples``.

        Args:
            results (dict): Pipeline results.

        Returns:
            dict: ``inputs`` ((3, H, W), or (3V, H, W) for V views) and
            ``data_samples`` (``SegDataSample``).

        Raises:
            ValueError: If the views of a multi-view sample differ in shape.
        """
        # A shallow copy: the keys removed below stay in the caller's dict.
        to_pack = dict(results)
        if not self.pack_seg_map:
            to_pack.pop('gt_seg_map', None)
        views = to_pack.get('img')
        multi_view = isinstance(views, (list, tuple))
        if multi_view:
            to_pack.pop('img')
            shapes = {v.shape for v in views}
            if len(shapes) != 1:
                raise ValueError('all views of a sample must have the same '
                                 f'shape to be stacked, got {sorted(shapes)} '
                                 f'for {results.get("img_path")}')
            to_pack['img_shape'] = views[0].shape[:2]
            if not self.pack_seg_map:
                to_pack['gt_seg_map'] = np.full(
                    views[0].shape[:2], self.ignore_index, dtype=np.uint8)

        packed = super().transform(to_pack)
        if multi_view:
            packed['inputs'] = torch.cat([_image_to_chw(v) for v in views])
            packed['data_samples'].set_metainfo(dict(num_views=len(views)))
        if 'gt_class_labels' in results:
            packed['data_samples'].set_data(
                dict(gt_class_labels=torch.from_numpy(
                    np.asarray(results['gt_class_labels'],
                               dtype=np.float32).reshape(-1))))
        return packed

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(meta_keys={self.meta_keys}, '
                f'pack_seg_map={self.pack_seg_map}, '
                f'ignore_index={self.ignore_index})')
