"""PASCAL VOC 2012 (+SBD "aug") for weakly supervised segmentation."""
import os.path as osp
from typing import List, Optional, Tuple

import mmengine.fileio as fileio
from mmengine.fileio import join_path
from mmengine.utils import is_abs
from mmseg.datasets import PascalVOCDataset
from mmseg.registry import DATASETS

from .checks import (DataIssue, DatasetCheckError, check_files_exist,
                     check_headers, describe_sample, is_local,
                     read_split_file, warn_blank_lines)
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
    """Start-up data checks and image-level labels for WSSS datasets.

    mmseg only asserts on missing paths, without saying which one, and finds
    a bad file when a sample is drawn, possibly hours into a run. The mixin

    - checks the data root, image/mask directories, split list and label
      file before ``BaseSegDataset.__init__`` runs (so with ``lazy_init``
      too), raising ``FileNotFoundError`` naming the missing one;
    - in ``load_data_list``, runs the *fast* check of
      :mod:`mmseg_fsr.datasets.checks` (split list: empty, duplicate ids,
      blank lines; every listed image and mask exists and is not empty; the
      label file parses and covers every image) and raises ONE
      :class:`~mmseg_fsr.datasets.checks.DatasetCheckError` listing every
      bad file with its reason. Blank lines of the split list are dropped
      with a warning. ``verify_files=False`` skips the file ``stat`` calls;
    - adds the sample's files as a note to any exception the pipeline
      raises, so that a decoding error names its file;
    - attaches ``gt_class_labels`` from the label file.

    The host class must be a ``BaseSegDataset`` and set ``verify_files``
    and ``img_label_file`` before calling its ``__init__``.
    """

    verify_files: bool = True
    _local_files: Optional[bool] = None  # set at the first sample

    def load_data_list(self) -> List[dict]:
        """Load the split list, check it and its files, attach labels.

        Returns:
            list[dict]: Data infos.

        Raises:
            DatasetCheckError: Listing every problem found.
        """
        data_list, issues = self.load_data_list_with_issues()
        if issues:
            source = self.ann_file or self.data_prefix.get('img_path')
            raise DatasetCheckError(f'{type(self).__name__} ({source})',
                                    issues)
        return data_list

    def load_data_list_with_issues(
            self,
            check_files: Optional[bool] = None
    ) -> Tuple[List[dict], List[DataIssue]]:
        """The data list and the fast check's problems, without raising.

        Args:
            check_files (bool, optional): ``stat`` every listed file.
                Defaults to ``self.verify_files``.

        Returns:
            tuple[list[dict], list[DataIssue]]: Data infos (blank lines
            dropped, labels attached where the label file has them) and
            the problems found.
        """
        if check_files is None:
            check_files = self.verify_files
        issues = []
        data_list = super().load_data_list()
        if self.ann_file and not osp.isdir(self.ann_file):
            split = read_split_file(self.ann_file, self.backend_args)
            issues.extend(split.issues)
            warn_blank_lines(self.ann_file, split.blank_lines)
            # mmseg turns a blank line into the image '<img_dir>/.jpg'
            data_list = [
                info for info in data_list if self._image_name(info) != ''
            ]
        elif not data_list:
            issues.append(
                DataIssue(
                    self.data_prefix.get('img_path', ''),
                    f'no *{self.img_suffix} image found in this directory'))
        if check_files:
            issues.extend(check_files_exist(data_list, self.backend_args))
        issues.extend(self._attach_image_labels(data_list))
        # GenerateImageLabels reads the class count from here
        num_classes = len(self.metainfo['classes'])
        for info in data_list:
            info['num_classes'] = num_classes
        return data_list, issues

    def prepare_data(self, idx: int):
        """``BaseDataset.prepare_data``, with the sample's files added as a
        note to any exception (cv2's ``!buf.empty()`` names no file).

        Local files' headers are read first (:func:`check_headers`, no
        decoding): a mask whose size differs from its image's stops here,
        naming both files, instead of training silently or failing in the
        metric with an ``IndexError`` that names none.
        """
        if self._local_files is None:
            path = self.get_data_info(idx)['img_path']
            self._local_files = is_local(path, self.backend_args)
        if self._local_files:
            info = self.get_data_info(idx)
            issues = check_headers(info, sizes_only=True)
            if issues:
                raise DatasetCheckError(
                    f'{type(self).__name__}: sample {idx} '
                    f'({describe_sample(info)})', issues)
        try:
            return super().prepare_data(idx)
        except Exception as err:
            try:
                where = describe_sample(self.get_data_info(idx))
            except Exception:  # pragma: no cover - keep the first error
                where = '(data info unavailable)'
            err.add_note(f'{type(self).__name__}: while loading sample '
                         f'{idx}: {where}')
            raise

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

    def _attach_image_labels(self, data_list: List[dict]) -> List[DataIssue]:
        """Set ``gt_class_labels`` from ``self.img_label_file`` in place.

        Returns:
            list[DataIssue]: An unreadable label file, or one issue per
            listed image without an entry.
        """
        if not self.img_label_file:
            return []
        try:
            labels = load_image_label_file(
                self.img_label_file, len(self.metainfo['classes']),
                backend_args=self.backend_args)
        except (OSError, ValueError) as err:
            return [DataIssue(self.img_label_file, str(err))]
        issues = []
        for info in data_list:
            name = self._image_name(info)
            if name not in labels:
                source = self.ann_file or self.data_prefix.get('img_path')
                issues.append(
                    DataIssue(
                        self.img_label_file,
                        f'image {name!r} (listed in {source}) has no entry '
                        'in this img_label_file'))
                continue
            info['gt_class_labels'] = labels[name].copy()
        return issues


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
        img_label_file (str, optional): {name: multi-hot of length 20} as
            ``.npz`` or pickled-dict ``.npy`` (read without running code),
            or ``.json`` {name: [class ids 1..20]}; relative to
            ``data_root`` unless absolute. Defaults to None.
        verify_files (bool): At start-up, ``stat`` every listed image and
            mask (missing or 0-byte files are reported). Defaults to True.
        **kwargs: Other ``BaseSegDataset`` arguments.

    Raises:
        FileNotFoundError: If data_root, an image/mask directory, the split
            list or the label file is missing.
        DatasetCheckError: (a ``ValueError``) listing every bad entry: an
            empty split list, duplicate ids, missing or empty images and
            masks, an unreadable label file or images it lacks.
    """

    def __init__(self,
                 ann_file: str,
                 img_suffix: str = '.jpg',
                 seg_map_suffix: str = '.png',
                 img_label_file: Optional[str] = None,
                 verify_files: bool = True,
                 **kwargs) -> None:
        self.verify_files = verify_files
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
