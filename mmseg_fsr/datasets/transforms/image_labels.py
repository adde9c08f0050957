"""Image-level (multi-hot) class labels for weakly supervised segmentation.

WSSS trains from the *set* of classes in an image only. On PASCAL VOC and
COCO that set is read off the ground-truth mask (background and the ignore
value excluded), or taken from a precomputed label file such as ToCo's
``cls_labels_onehot.npy``. This module holds both routes plus the transform
that puts the vector into the pipeline results.
"""
import io
import json
import os.path as osp
import pickle
import zipfile
from typing import Dict, Iterable, Optional

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


class UnsafeLabelFileError(ValueError):
    """An image label file needs something other than numpy arrays and
    builtin containers to load, i.e. it could run code: refused."""


# The only globals a pickled ``{name: ndarray}`` dict (``np.save`` of a dict,
# as in the WSSS authors' ``cls_labels_onehot.npy``) refers to: numpy's array
# and scalar reconstruction and the dtype class. Dicts, lists, tuples, str,
# bytes and numbers are pickle opcodes, not globals. numpy 2 writes
# ``numpy._core``, numpy 1 ``numpy.core``.
_SAFE_PICKLE_GLOBALS = {
    (module, name)
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray')
    for name in ('_reconstruct', 'scalar')
} | {('numpy', 'ndarray'), ('numpy', 'dtype')}


def _numpy_global(name: str):
    """Resolve an allowlisted numpy global without importing any module."""
    if name == 'ndarray':
        return np.ndarray
    if name == 'dtype':
        return np.dtype
    try:  # numpy >= 2
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    return getattr(multiarray, name)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that builds numpy arrays/scalars and builtin containers only.

    Any other global (``os.system``, ``builtins.eval``, a class whose
    ``__reduce__`` runs code, ...) is refused in ``find_class``, i.e. while
    the stream is parsed and before any object it describes is called.
    """

    def __init__(self, file, source: str) -> None:
        super().__init__(file, encoding='latin1')
        self.source = source

    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_PICKLE_GLOBALS:
            return _numpy_global(name)
        raise UnsafeLabelFileError(
            f'image label file {self.source}: refused to load it, its pickle '
            f'data refers to {module}.{name}, which is not a numpy array. '
            'Only {image name: multi-hot vector} dicts of numpy arrays or '
            'lists are read from .npy files; a file that needs anything '
            'else could run code when loaded. Use a .json or .npz label '
            'file instead (see docs/faults.md)')

    def persistent_load(self, pid):
        raise UnsafeLabelFileError(
            f'image label file {self.source}: refused to load it (pickle '
            'persistent ids are not allowed)')


def _load_npy(raw: bytes, path: str):
    """Read a ``.npy`` file without running code from it.

    Plain arrays load with ``allow_pickle=False``. Object arrays (such as a
    pickled dict) go through ``_NumpyOnlyUnpickler``.
    """
    stream = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(stream)
        header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                  else np.lib.format.read_array_header_2_0)
        shape, _, dtype = header(stream)
    except ValueError as err:
        raise ValueError(f'image label file {path} is not a valid .npy file: '
                         f'{err}') from err
    if not dtype.hasobject:
        stream.seek(0)
        return np.load(stream, allow_pickle=False)
    try:
        array = _NumpyOnlyUnpickler(stream, path).load()
    except UnsafeLabelFileError:
        raise
    except Exception as err:  # truncated or malformed pickle data
        raise ValueError(f'image label file {path}: cannot read its pickled '
                         f'content ({type(err).__name__}: {err})') from err
    if not isinstance(array, np.ndarray) or array.shape != shape:
        raise ValueError(f'image label file {path}: malformed .npy content')
    return array


def _load_npz(raw: bytes, path: str) -> dict:
    """Read a ``.npz`` archive {image name: vector}; pickles are refused."""
    if not raw.startswith(b'PK'):
        # np.load would take any other content for a pickle
        raise ValueError(f'image label file {path} is not a valid .npz '
                         'file (not a zip archive)')
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except ValueError as err:
        if 'allow_pickle' in str(err):
            raise UnsafeLabelFileError(
                f'image label file {path}: refused to load it, it holds '
                'pickled object arrays; store plain numeric vectors') from err
        raise ValueError(f'image label file {path} is not a valid .npz '
                         f'file: {err}') from err
    except Exception as err:  # zipfile.BadZipFile, OSError, ...
        raise ValueError(f'image label file {path} is not a valid .npz '
                         f'file: {type(err).__name__}: {err}') from err


def _vectors_to_labels(raw: dict, path: str, num_fg: int,
                       num_classes: int) -> Dict[str, np.ndarray]:
    """Check and convert {name: multi-hot vector} to float32 vectors."""
    labels = {}
    for name, vec in raw.items():
        try:
            vec = np.asarray(vec, dtype=np.float32).reshape(-1)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f'image label file {path}: entry {name!r} is not a numeric '
                f'vector ({err})') from err
        if vec.shape[0] != num_fg:
            raise ValueError(
                f'image label file {path}: entry {name!r} has '
                f'{vec.shape[0]} classes but the dataset has {num_fg} '
                f'foreground classes (num_classes={num_classes})')
        labels[str(name)] = vec
    return labels


def _json_to_labels(data: bytes, path: str, num_classes: int,
                    background_index: Optional[int]) -> Dict[str, np.ndarray]:
    """``{image name: [class ids]}`` JSON to multi-hot vectors."""
    try:
        raw = json.loads(data)
    except ValueError as err:  # UnicodeDecodeError included
        raise ValueError(
            f'image label file {path} is not valid JSON: {err}') from err
    if not isinstance(raw, dict):
        raise ValueError(f'image label file {path} must hold a dict '
                         f'{{image name: [class ids]}}')
    labels = {}
    for name, ids in raw.items():
        if not isinstance(ids, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise ValueError(
                f'image label file {path}: entry {name!r} must be a list '
                f'of integer class ids, got {ids!r}')
        labels[str(name)] = class_ids_to_multi_hot(
            ids, num_classes, background_index,
            source=f'image label file {path} (entry {name!r})')
    return labels


def load_image_label_file(path: str,
                          num_classes: int,
                          background_index: Optional[int] = 0,
                          backend_args: Optional[dict] = None
                          ) -> Dict[str, np.ndarray]:
    """Load precomputed image-level labels, without running code from them.

    Three formats are accepted:

    - ``.npy``: a dict ``{image name: multi-hot vector}`` over the foreground
      classes, as saved by ``np.save(path, dict)`` (the WSSS authors'
      ``cls_labels_onehot.npy``). Such a file is a pickle. It is read by an
      unpickler that only builds numpy arrays and builtin containers and
      refuses every other global *before* anything is called, so a crafted
      file cannot run code (:class:`UnsafeLabelFileError`);
    - ``.npz``: an archive with one multi-hot vector per image name
      (``np.savez(path, **labels)``); loaded with ``allow_pickle=False``;
    - ``.json``: ``{image name: [class ids]}`` with ids in the dataset's
      class numbering (1..20 on VOC, 1..80 on COCO).

    ``tools/dataset_converters/convert_image_labels.py`` turns one format
    into another.

    Args:
        path (str): Label file path.
        num_classes (int): Number of classes including background.
        background_index (int, optional): Background id. Defaults to 0.
        backend_args (dict, optional): mmengine file backend arguments.

    Returns:
        dict[str, np.ndarray]: Image name -> float32 multi-hot vector.

    Raises:
        UnsafeLabelFileError: If a ``.npy``/``.npz`` file needs anything but
            numpy arrays and builtin containers to load.
        ValueError: On an unknown suffix, a malformed file, or a vector or id
            that does not fit ``num_classes``; the message names the file.
    """
    num_fg = len(foreground_class_ids(num_classes, background_index))
    suffix = osp.splitext(path)[1].lower()
    if suffix == '.npy':
        raw = _load_npy(fileio.get(path, backend_args=backend_args), path)
        # np.save on a dict stores a 0-d object array around it.
        raw = raw.item() if raw.dtype == object and raw.ndim == 0 else raw
        if not isinstance(raw, dict):
            raise ValueError(f'image label file {path} must hold a dict '
                             f'{{image name: multi-hot vector}}, got '
                             f'{type(raw).__name__}')
        return _vectors_to_labels(raw, path, num_fg, num_classes)
    if suffix == '.npz':
        raw = _load_npz(fileio.get(path, backend_args=backend_args), path)
        return _vectors_to_labels(raw, path, num_fg, num_classes)
    if suffix == '.json':
        return _json_to_labels(
            fileio.get(path, backend_args=backend_args), path, num_classes,
            background_index)
    raise ValueError(
        f'image label file {path} must be a .npy, .npz or .json file')


def save_image_label_file(path: str, labels: Dict[str, np.ndarray],
                          background_index: Optional[int] = 0) -> None:
    """Write image-level labels in a pickle-free format.

    Args:
        path (str): ``.npz`` (one multi-hot vector per image name, written
            with ``allow_pickle=False``) or ``.json`` (``{name: [class
            ids]}``, slot ``i`` of a vector is class ``i + 1`` when
            ``background_index=0``).
        labels (dict[str, np.ndarray]): Image name -> multi-hot vector over
            the foreground classes.
        background_index (int, optional): Background id (``.json`` only).
            Defaults to 0.

    Raises:
        ValueError: On another suffix.
    """
    suffix = osp.splitext(path)[1].lower()
    if suffix == '.npz':
        # One member per name, written by hand: np.savez(**labels) would
        # clash with its own ``file`` argument. A fixed member date keeps
        # the file byte-reproducible.
        with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as archive:
            for name, vec in labels.items():
                info = zipfile.ZipInfo(f'{name}.npy', (1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                with archive.open(info, 'w') as member:
                    np.lib.format.write_array(
                        member, np.asarray(vec), allow_pickle=False)
    elif suffix == '.json':
        if len(labels):
            num_fg = len(np.asarray(next(iter(labels.values()))).reshape(-1))
            fg_ids = foreground_class_ids(
                num_fg + (background_index is not None), background_index)
        with open(path, 'w') as f:
            json.dump(
                {
                    str(name): [
                        int(fg_ids[i])
                        for i in np.flatnonzero(np.asarray(vec).reshape(-1))
                    ]
                    for name, vec in labels.items()
                }, f)
    else:
        raise ValueError(f'cannot write {path}: image label files are '
                         'written as .npz or .json')


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
    - num_classes (unless given as an argument; the WSSS data sets add it)

    Added Keys:

    - gt_class_labels (np.float32, shape (num_classes - 1,))

    Args:
        num_classes (int, optional): Number of classes including background.
            Defaults to None: the data set's (``results['num_classes']``),
            so that the class count is set in one place, its class list.
        ignore_index (int): Mask value that is not a class. Defaults to 255.
        background_index (int, optional): Background class id; it gets no
            slot. ``None`` for datasets without background. Defaults to 0.
        allow_empty (bool): Accept images without any foreground class.
            Defaults to False, since such images carry no training signal
            for a multi-label classifier and hint at a broken dataset.
        optional (bool): Pass an image that has neither a mask nor labels
            through without labels: a bare image at inference
            (``inference_model``, ``MMSegInferencer`` drop
            ``LoadAnnotations``), which the model segments with its decoder
            alone. Defaults to False (training needs the labels).
    """

    def __init__(self,
                 num_classes: Optional[int] = None,
                 ignore_index: int = 255,
                 background_index: Optional[int] = 0,
                 allow_empty: bool = False,
                 optional: bool = False) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.background_index = background_index
        self.allow_empty = allow_empty
        self.optional = optional

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
        if self.optional and not ({'gt_class_labels', 'gt_seg_map'} &
                                  results.keys()):
            return results
        num_classes = self.num_classes or results.get('num_classes')
        if num_classes is None:
            raise KeyError('GenerateImageLabels needs num_classes: give it, '
                           'or use a WSSS data set, which adds it to every '
                           f'sample (image {results.get("img_path", source)})')
        if 'gt_class_labels' in results:
            labels = np.asarray(
                results['gt_class_labels'], dtype=np.float32).reshape(-1)
            num_fg = len(
                foreground_class_ids(num_classes, self.background_index))
            if labels.shape[0] != num_fg:
                raise ValueError(
                    f'wrong class count: gt_class_labels of '
                    f'{results.get("img_path", source)} has {labels.shape[0]} '
                    f'entries but num_classes={num_classes} needs {num_fg}')
        elif 'gt_seg_map' in results:
            labels = class_ids_to_multi_hot(
                np.unique(results['gt_seg_map']), num_classes,
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
                f'allow_empty={self.allow_empty}, optional={self.optional})')
