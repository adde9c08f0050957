"""PASCAL VOC 2012 (+SBD "aug") for weakly supervised segmentation."""
import os.path as osp
from typing import List, Optional

import mmengine.fileio as fileio
from mmengine.fileio import join_path
from mmengine.utils import is_abs
from mmseg.datasets import PascalVOCDataset
from mmseg.registry import DATASETS

from .transforms.image_labels import load_image_label_file


def pascal_voc_palette(num_entries: int = 256) -> List[List[int]]:
    """The PASCAL VOC colour map (the one stored in the VOC palette PNGs).

    Class ``i`` gets the colour whose R, G and B bits are the interleaved
    bits of ``i``, most significant first; entry 255 is the cream-coloured
    'ignore' border.

    Args:
        num_entries (int): Number of palette entries. Defaults to 256.

    Returns:
        list[list[int]]: ``num_entries`` RGB triplets.
    """
    palette = []
    for i in range(num_entries):
        rgb = [0, 0, 0]
        code = i
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((code >> channel) & 1) << (7 - bit)
            code >>= 3
        palette.append(rgb)
    return palette


def _resolve(path: Optional[str], data_root: Optional[str]) -> Optional[str]:
    """Join ``path`` with ``data_root`` the way mmengine's BaseDataset does."""
    if path and data_root and not is_abs(path):
        return join_path(data_root, path)
    return path


class WSSSDatasetMixin:
    """Path checks and image-level label loading shared by WSSS datasets.

    mmseg only asserts on missing paths, without saying which one; a WSSS
    run also needs its label file to cover every listed image. The mixin
    checks paths before ``BaseSegDataset.__init__`` runs (so it works with
    ``lazy_init`` too) and attaches ``gt_class_labels`` in
    ``load_data_list``. The host class must be a ``BaseSegDataset``.
    """

    def load_data_list(self) -> List[dict]:
        """Load the split list, check its images and attach labels.

        Returns:
            list[dict]: Data infos.
        """
        data_list = super().load_data_list()
        self._check_images_exist(data_list)
        self._attach_image_labels(data_list)
        return data_list

    def _check_paths(self,
                     data_root: Optional[str],
                     data_prefix: dict,
                     ann_file: str,
                     img_label_file: Optional[str],
                     backend_args: Optional[dict],
                     ann_file_required: bool = True) -> Optional[str]:
        """Fail early, naming the path, when an input location is missing.

        Args:
            data_root (str, optional): Dataset root.
            data_prefix (dict): ``img_path`` / ``seg_map_path`` prefixes.
            ann_file (str): Split list.
            img_label_file (str, optional): Image-level label file.
            backend_args (dict, optional): mmengine file backend arguments.
            ann_file_required (bool): Whether a split list is mandatory.

        Returns:
            str, optional: ``img_label_file`` joined with ``data_root``.

        Raises:
            FileNotFoundError: If any given location does not exist.
        """

        def require(path: Optional[str], what: str) -> None:
            if path and not fileio.exists(path, backend_args=backend_args):
                raise FileNotFoundError(
                    f'{type(self).__name__}: {what} not found: {path}')

        require(data_root, 'data_root')
        require(_resolve(data_prefix.get('img_path'), data_root),
                'image directory (data_prefix.img_path)')
        require(_resolve(data_prefix.get('seg_map_path'), data_root),
                'mask directory (data_prefix.seg_map_path)')
        if ann_file_required and not ann_file:
            raise FileNotFoundError(
                f'{type(self).__name__}: ann_file (split list) is required')
        require(_resolve(ann_file, data_root), 'ann_file (split list)')
        label_file = _resolve(img_label_file, data_root)
        require(label_file, 'img_label_file')
        return label_file

    def _image_name(self, data_info: dict) -> str:
        """Split-list name of a sample: image path relative to the image
        directory, without suffix."""
        img_dir = self.data_prefix.get('img_path', '')
        rel = osp.relpath(data_info['img_path'], img_dir) if img_dir \
            else data_info['img_path']
        return rel[:-len(self.img_suffix)] if self.img_suffix else rel

    def _check_images_exist(self, data_list: List[dict]) -> None:
        """Raise if names in the split list have no image file."""
        missing = [
            info['img_path'] for info in data_list
            if not fileio.exists(info['img_path'],
                                 backend_args=self.backend_args)
        ]
        if missing:
            raise FileNotFoundError(
                f'{type(self).__name__}: {len(missing)} image(s) listed in '
                f'{self.ann_file} have no image file, e.g. {missing[0]}')

    def _attach_image_labels(self, data_list: List[dict]) -> None:
        """Set ``gt_class_labels`` from ``self.img_label_file`` in place."""
        if not self.img_label_file:
            return
        labels = load_image_label_file(
            self.img_label_file, len(self.metainfo['classes']),
            backend_args=self.backend_args)
        for info in data_list:
            name = self._image_name(info)
            if name not in labels:
                raise ValueError(
                    f'{type(self).__name__}: image {name!r} (from '
                    f'{self.ann_file or self.data_prefix.get("img_path")}) '
                    f'has no entry in img_label_file {self.img_label_file}')
            info['gt_class_labels'] = labels[name].copy()


@DATASETS.register_module()
class WSSSVOCDataset(WSSSDatasetMixin, PascalVOCDataset):
    """PASCAL VOC 2012 with optional precomputed image-level labels.

    Same layout, classes and arguments as mmseg's ``PascalVOCDataset``. With
    ``img_label_file`` every data info carries ``gt_class_labels`` (float32
    multi-hot over the 20 object classes, slot ``c - 1`` for class ``c``);
    ``GenerateImageLabels`` then keeps them. Without it the labels are read
    from the masks by ``GenerateImageLabels``, which on VOC gives the same
    vectors as ToCo's ``cls_labels_onehot.npy``.

    Args:
        ann_file (str): Split list (one image name per line), relative to
            ``data_root`` unless absolute.
        img_suffix (str): Image suffix. Defaults to '.jpg'.
        seg_map_suffix (str): Mask suffix. Defaults to '.png'.
        img_label_file (str, optional): ``.npy`` dict {name: multi-hot of
            length 20} or ``.json`` dict {name: [class ids 1..20]}, relative
            to ``data_root`` unless absolute. Defaults to None.
        **kwargs: Other ``BaseSegDataset`` arguments.

    Raises:
        FileNotFoundError: If data_root, an image/mask directory, the split
            list, the label file or a listed image is missing.
        ValueError: If the label file lacks a listed image.
    """

    def __init__(self,
                 ann_file: str,
                 img_suffix: str = '.jpg',
                 seg_map_suffix: str = '.png',
                 img_label_file: Optional[str] = None,
                 **kwargs) -> None:
        self.img_label_file = self._check_paths(
            kwargs.get('data_root'),
            kwargs.get('data_prefix', dict(img_path='', seg_map_path='')),
            ann_file, img_label_file, kwargs.get('backend_args'))
        super().__init__(
            ann_file=ann_file,
            img_suffix=img_suffix,
            seg_map_suffix=seg_map_suffix,
            **kwargs)


__all__ = ['WSSSVOCDataset', 'WSSSDatasetMixin', 'pascal_voc_palette']
