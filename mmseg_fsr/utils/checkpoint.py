"""Load mmengine checkpoints under torch >= 2.6 (``weights_only=True``).

Since torch 2.6, ``torch.load`` defaults to ``weights_only=True``: only
tensors, containers and primitive types (plus an explicit allowlist) may be
unpickled. mmengine 0.10.7 calls ``torch.load(filename, map_location=...)``
without ``weights_only``, and every checkpoint the :class:`~mmengine.runner.
Runner` saves contains more than that in its ``message_hub`` entry, so
``resume=True``, ``load_from`` and ``tools/test.py`` fail with::

    _pickle.UnpicklingError: Weights only load failed ...
    Unsupported global: GLOBAL mmengine.logging.history_buffer.HistoryBuffer

:func:`allow_mmengine_checkpoints` keeps ``weights_only=True`` and registers
(``torch.serialization.add_safe_globals``) exactly the globals that a Runner
checkpoint (meta, state_dict, message_hub, optimizer, param_schedulers) was
found to contain, determined by saving one with mmengine 0.10.7 / numpy 2 and
listing ``torch.serialization.get_unsafe_globals_in_checkpoint``:

* ``mmengine.logging.history_buffer.HistoryBuffer`` -- the message hub's
  log scalars. The name is bound to :class:`_DataOnlyHistoryBuffer`, whose
  ``__setstate__`` admits only what the Runner writes (``max_length``, the
  two numeric 1-D history arrays and the registered statistics methods,
  each under its own name) and then turns the object into a plain
  ``HistoryBuffer``. mmengine's own ``__setstate__`` updates the
  *class-wide* statistics table from the file, so a crafted checkpoint
  could make ``mean`` compute ``max`` for every buffer of the process;
  that, unknown keys and non-array histories raise ``UnpicklingError``;
* ``numpy._core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``
  and the numeric/bool ``numpy.dtypes.*DType`` classes -- the buffers'
  arrays (the unpickler checks the dtype *instance's* class when it is built);
* ``numpy._core.multiarray.scalar`` -- numpy scalars in the runtime info
  (``eta``, ``best_score``, metric values);
* the numpy 1.x spellings ``numpy.core.multiarray._reconstruct`` /
  ``numpy.core.multiarray.scalar`` mapped to the same functions, so
  checkpoints written under numpy < 2 load too;
* ``builtins.getattr`` -- ``HistoryBuffer.__getstate__`` saves its statistics
  methods as ``getattr(HistoryBuffer, 'min')`` etc. The real ``getattr``
  would make the allowlist meaningless, so the name is bound to
  :func:`_history_buffer_getattr`, which only resolves attributes of
  ``HistoryBuffer`` that are registered statistics methods and raises
  ``UnpicklingError`` for anything else.

Nothing else is allowed, so an untrusted ``.pth`` still cannot run code.
``mmseg_fsr.utils`` applies this when it is imported (i.e. on
``import mmseg_fsr`` and through ``custom_imports``), logging one INFO line.

For checkpoints that hold other Python objects (e.g. from other codebases),
:func:`trust_local_checkpoints` is an explicit opt-in that makes mmengine
load *local* files with ``weights_only=False``. It is never applied
automatically.
"""
import logging
import os.path as osp
import pickle
from typing import Any, Callable, List, Tuple, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer, print_log

__all__ = [
    'allow_mmengine_checkpoints', 'is_applied',
    'mmengine_checkpoint_safe_globals', 'trust_local_checkpoints'
]

SafeGlobal = Union[Callable, Tuple[Callable, str]]

_APPLIED = False
# registered by every HistoryBuffer.__init__ (the class dict is empty before)
_DEFAULT_STATISTICS = frozenset({'min', 'max', 'current', 'mean'})


def _numpy_core():
    """``numpy._core`` (numpy >= 2) or ``numpy.core`` (numpy 1.x)."""
    core = getattr(np, '_core', None)
    if core is None or not hasattr(core, 'multiarray'):
        core = np.core
    return core


def _numpy_dtype_classes() -> List[type]:
    """The dtype classes of numeric and bool numpy types (numpy >= 1.25)."""
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is None:  # numpy < 1.25: dtype instances are plain np.dtype
        return []
    classes = []
    for name in getattr(dtypes, '__all__', ()):
        cls = getattr(dtypes, name, None)
        scalar_type = getattr(cls, 'type', None)
        if isinstance(scalar_type, type) and issubclass(
                scalar_type, (np.number, np.bool_)):
            classes.append(cls)
    return classes


def _registered_statistics() -> dict:
    """Name -> method of every ``HistoryBuffer`` statistics method."""
    registered = {name: getattr(HistoryBuffer, name)
                  for name in _DEFAULT_STATISTICS}
    registered.update(HistoryBuffer._statistics_methods)
    return registered


def _check_history_buffer_state(state: Any) -> None:
    """Raise ``UnpicklingError`` unless ``state`` is what
    ``HistoryBuffer.__getstate__`` of a Runner writes: data, and each
    statistics method under its own name."""

    def refuse(why: str):
        raise pickle.UnpicklingError(
            f'HistoryBuffer state refused by mmseg_fsr\'s weights_only '
            f'allowlist: {why}')

    if not isinstance(state, dict):
        refuse(f'a {type(state).__name__}, not a dict')
    unknown = set(state) - {
        'max_length', '_log_history', '_count_history', 'statistics_methods'
    }
    if unknown:
        refuse(f'unknown attribute(s) {sorted(map(str, unknown))}')
    max_length = state.get('max_length', 1)
    if not isinstance(max_length, int) or isinstance(max_length, bool) \
            or max_length < 1:
        refuse(f'max_length={max_length!r}')
    for key in ('_log_history', '_count_history'):
        array = state.get(key)
        if not isinstance(array, np.ndarray) or array.ndim != 1 or not (
                np.issubdtype(array.dtype, np.number)
                or array.dtype == np.bool_):
            refuse(f'{key} is not a 1-D numeric array')
    methods = state.get('statistics_methods', {})
    registered = _registered_statistics()
    if not isinstance(methods, dict) or any(
            registered.get(name) is not method
            for name, method in methods.items()):
        refuse(f'statistics_methods {methods!r} would replace '
               'HistoryBuffer\'s own statistics methods')


class _DataOnlyHistoryBuffer(HistoryBuffer):
    """What ``weights_only`` unpickling builds for a pickled
    ``HistoryBuffer``: the state is checked to hold data only
    (:func:`_check_history_buffer_state`), the class-wide statistics table
    is left alone, and the object becomes a plain ``HistoryBuffer``."""

    def __setstate__(self, state: dict) -> None:
        _check_history_buffer_state(state)
        self.__class__ = HistoryBuffer
        self.__dict__.update({
            key: value
            for key, value in state.items() if key != 'statistics_methods'
        })


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """Restricted stand-in for ``builtins.getattr`` while unpickling.

    Only ``getattr(HistoryBuffer, <registered statistics method>)`` -- what
    ``HistoryBuffer.__getstate__`` produces -- is resolved.
    """
    allowed = _DEFAULT_STATISTICS.union(HistoryBuffer._statistics_methods)
    # the pickled name HistoryBuffer resolves to _DataOnlyHistoryBuffer
    if (obj in (HistoryBuffer, _DataOnlyHistoryBuffer)
            and isinstance(name, str) and name in allowed
            and not name.startswith('_')
            and callable(getattr(HistoryBuffer, name, None))):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'getattr({obj!r}, {name!r}) is not allowed by mmseg_fsr\'s '
        'weights_only allowlist (only HistoryBuffer statistics methods are).')


def mmengine_checkpoint_safe_globals() -> List[SafeGlobal]:
    """Return the allowlist for ``torch.serialization.add_safe_globals``.

    Entries are either callables/classes (registered under their own
    ``module.qualname``) or ``(callable, 'pickled.name')`` pairs.
    """
    core = _numpy_core()
    reconstruct = core.multiarray._reconstruct
    scalar = core.multiarray.scalar
    safe: List[SafeGlobal] = [
        (_DataOnlyHistoryBuffer,
         'mmengine.logging.history_buffer.HistoryBuffer'),
        np.ndarray,
        np.dtype,
        # numpy 2 pickles as numpy._core.*, numpy 1.x as numpy.core.*
        (reconstruct, 'numpy._core.multiarray._reconstruct'),
        (reconstruct, 'numpy.core.multiarray._reconstruct'),
        (scalar, 'numpy._core.multiarray.scalar'),
        (scalar, 'numpy.core.multiarray.scalar'),
        (_history_buffer_getattr, 'builtins.getattr'),
    ]
    safe.extend(_numpy_dtype_classes())
    return safe


def allow_mmengine_checkpoints() -> bool:
    """Allow ``torch.load(weights_only=True)`` to read mmengine checkpoints.

    Registers :func:`mmengine_checkpoint_safe_globals` with
    ``torch.serialization.add_safe_globals``. Idempotent; logs one INFO line
    through mmengine's logger the first time it is applied.

    Returns:
        bool: ``True`` if the allowlist is (now) registered, ``False`` when
        this torch has no ``add_safe_globals`` (torch < 2.4, which does not
        default to ``weights_only=True`` either, so nothing is needed).
    """
    global _APPLIED
    if _APPLIED:
        return True
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is None:
        return False
    safe = mmengine_checkpoint_safe_globals()
    add_safe_globals(safe)
    _APPLIED = True
    print_log(
        'mmseg_fsr.utils.allow_mmengine_checkpoints: torch.load keeps '
        'weights_only=True; allowlisted the types mmengine Runner '
        f'checkpoints contain ({len(safe)} globals: HistoryBuffer, numpy '
        'arrays/scalars/dtypes, restricted getattr)',
        logger='current',
        level=logging.INFO)
    return True


def is_applied() -> bool:
    """Whether :func:`allow_mmengine_checkpoints` has been applied."""
    return _APPLIED


def trust_local_checkpoints() -> None:
    """Opt-in: load *local* checkpoint files with ``weights_only=False``.

    Overrides mmengine's local-path scheme of
    :class:`mmengine.runner.CheckpointLoader`. Only call this for files you
    trust: unpickling can execute arbitrary code. Remote (http, hub) loaders
    are left alone.
    """
    from mmengine.runner import CheckpointLoader

    def load_from_local_trusted(filename: str, map_location=None):
        filename = osp.expanduser(filename)
        if not osp.isfile(filename):
            raise FileNotFoundError(f'{filename} can not be found.')
        return torch.load(
            filename, map_location=map_location, weights_only=False)

    CheckpointLoader.register_scheme(
        prefixes='', loader=load_from_local_trusted, force=True)
    print_log(
        'mmseg_fsr: local checkpoints are now loaded with '
        'torch.load(weights_only=False) (trust_local_checkpoints)',
        logger='current',
        level=logging.WARNING)
