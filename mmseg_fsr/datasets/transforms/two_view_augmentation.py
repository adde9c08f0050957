"""The two-view training augmentation of the FSR authors' code."""
from typing import Optional, Tuple

from mmpretrain.datasets.transforms import MultiView
from mmseg.registry import TRANSFORMS


@TRANSFORMS.register_module()
class WSSSMultiView(MultiView):
    """Independent random views of one image, each augmented alike.

    Every view is a random resized crop to ``crop_size`` (bicubic, through
    Pillow as torchvision does), a horizontal flip with probability 0.5 and,
    with probability ``color_jitter_prob``, torchvision's ``ColorJitter``:
    the authors' ``MultiviewTransform`` (the normalisation happens in the
    data pre-processor). One transform instead of a transform list, so that
    a config changes the crop size with one key.

    Args:
        crop_size (int): Output side of every view.
        num_views (int): Number of views. Defaults to 2.
        crop_ratio_range (tuple[float, float]): Area range of the crop, as a
            fraction of the image. Defaults to (0.32, 1.0).
        color_jitter (dict, optional): ``brightness``, ``contrast``,
            ``saturation`` and ``hue`` of ``ColorJitter``; None leaves colour
            alone. Defaults to the authors' (0.4, 0.4, 0.2, 0.1).
        color_jitter_prob (float): Probability of the colour jitter.
            Defaults to 0.5.
    """

    def __init__(self,
                 crop_size: int,
                 num_views: int = 2,
                 crop_ratio_range: Tuple[float, float] = (0.32, 1.0),
                 color_jitter: Optional[dict] = dict(
                     brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1),
                 color_jitter_prob: float = 0.5) -> None:
        view = [
            dict(
                type='mmpretrain.RandomResizedCrop',
                scale=crop_size,
                crop_ratio_range=crop_ratio_range,
                interpolation='bicubic',
                backend='pillow'),
            dict(type='mmpretrain.RandomFlip', prob=0.5,
                 direction='horizontal'),
        ]
        if color_jitter:
            # torchvision's ColorJitter, as the authors: mmcv's hue shift
            # overflows under numpy 2.
            view.append(
                dict(
                    type='RandomApply',
                    prob=color_jitter_prob,
                    transforms=[
                        dict(type='mmpretrain.NumpyToPIL', to_rgb=True),
                        dict(
                            type='mmpretrain.torchvision/ColorJitter',
                            **color_jitter),
                        dict(type='mmpretrain.PILToNumpy', to_bgr=True),
                    ]))
        super().__init__(transforms=[view], num_views=num_views)
