"""Refuse checkpoints that do not fit the model they are loaded into.

mmengine loads non-strictly by default: keys the checkpoint lacks and
tensors of another shape only produce a warning, and the model keeps its
random initial weights there. A test then scores a partly (or wholly)
random model and exits 0. :func:`check_checkpoint_fits` compares a
checkpoint's ``state_dict`` with the model's and raises
:class:`CheckpointMismatchError` listing every missing key and every shape
mismatch (checkpoint shape vs model shape), unless partial loading is
explicitly allowed; the message names how to allow it.
"""
import logging
import re
from typing import Dict, List, NamedTuple, Sequence, Tuple

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.runner.checkpoint import (_load_checkpoint,
                                        _load_checkpoint_to_model)

# keys a checkpoint may lack without changing the model's output
# (mmengine ignores them too)
_OPTIONAL_KEY = re.compile(r'(^|\.)num_batches_tracked$')
# mmengine's Runner.load_checkpoint default
DEFAULT_REVISE_KEYS = ((r'^module\.', ''), )
# longest list of keys a message prints
MAX_LISTED_KEYS = 50
# the tools' opt-in (tools/test.py, export_pseudo_labels.py, visualize_cams)
ALLOW_PARTIAL_FLAG = '--allow-partial-checkpoint'


def add_allow_partial_argument(parser) -> None:
    """Add the tools' ``--allow-partial-checkpoint`` switch to ``parser``."""
    parser.add_argument(
        ALLOW_PARTIAL_FLAG,
        action='store_true',
        help='use a checkpoint that lacks model keys or holds tensors of '
        'other shapes (those weights keep their initial values); without '
        'it such a checkpoint stops the command, listing them')


class CheckpointFit(NamedTuple):
    """How a checkpoint's ``state_dict`` matches a model's."""
    missing: List[str]
    # (key, checkpoint shape, model shape)
    mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]]
    unexpected: List[str]

    @property
    def fits(self) -> bool:
        return not self.missing and not self.mismatched

    def describe(self) -> str:
        """One line per problem, at most ``MAX_LISTED_KEYS`` per kind."""

        def listed(title, lines):
            if not lines:
                return []
            more = len(lines) - MAX_LISTED_KEYS
            return [f'{title} ({len(lines)}):'] + [
                f'  {line}' for line in lines[:MAX_LISTED_KEYS]
            ] + ([f'  ... and {more} more'] if more > 0 else [])

        return '\n'.join(
            listed('size mismatch, checkpoint vs model',
                   [f'{k}: {tuple(c)} vs {tuple(m)}'
                    for k, c, m in self.mismatched]) +
            listed('missing in the checkpoint', self.missing) +
            listed('in the checkpoint only (ignored)', self.unexpected))


class CheckpointMismatchError(RuntimeError):
    """A checkpoint lacks model keys or holds tensors of other shapes."""


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside DDP-like wrappers and test-time-augmentation
    models (what mmengine loads a checkpoint into)."""
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def checkpoint_fit(model: nn.Module,
                   checkpoint: dict,
                   revise_keys: Sequence[Tuple[str, str]] = DEFAULT_REVISE_KEYS
                   ) -> CheckpointFit:
    """Compare a checkpoint's ``state_dict`` with ``model``'s.

    Args:
        model (nn.Module): The model (wrappers are unwrapped).
        checkpoint (dict): A loaded checkpoint, or a bare state dict.
        revise_keys (Sequence[tuple[str, str]]): (pattern, replacement)
            applied to the checkpoint's keys, as mmengine does.

    Returns:
        CheckpointFit: Missing keys, shape mismatches and unexpected keys.
    """
    state = checkpoint.get('state_dict', checkpoint)
    for pattern, replacement in revise_keys:
        state = {re.sub(pattern, replacement, k): v for k, v in state.items()}
    expected: Dict[str, object] = unwrap_model(model).state_dict()
    missing, mismatched = [], []
    for key, tensor in expected.items():
        if key not in state:
            if not _OPTIONAL_KEY.search(key):
                missing.append(key)
            continue
        found = getattr(state[key], 'shape', None)
        if found is not None and tuple(found) != tuple(tensor.shape):
            mismatched.append((key, tuple(found), tuple(tensor.shape)))
    unexpected = [key for key in state if key not in expected]
    return CheckpointFit(missing, mismatched, unexpected)


def check_checkpoint_fits(model: nn.Module,
                          checkpoint: dict,
                          source: str,
                          allow_partial: bool = False,
                          opt_in: str = 'allow_partial=True') -> CheckpointFit:
    """Raise unless ``checkpoint`` fits ``model`` (or partial is allowed).

    Args:
        model (nn.Module): The model.
        checkpoint (dict): The loaded checkpoint.
        source (str): Where it came from (its file), for the message.
        allow_partial (bool): Load what fits; log the rest as a warning.
        opt_in (str): How the caller allows partial loading (a command-line
            flag, an argument), named in the message.

    Returns:
        CheckpointFit: The comparison.

    Raises:
        CheckpointMismatchError: Listing the missing keys and the shape
            mismatches with both shapes.
    """
    fit = checkpoint_fit(model, checkpoint)
    if fit.fits:
        if fit.unexpected:
            print_log(f'{source}: keys the model does not have were '
                      f'ignored:\n{fit.describe()}', logger='current',
                      level=logging.WARNING)
        return fit
    if not allow_partial:
        raise CheckpointMismatchError(
            f'{source} does not fit the model '
            f'({type(unwrap_model(model)).__name__}): '
            f'{len(fit.missing)} missing key(s), {len(fit.mismatched)} '
            f'size mismatch(es):\n{fit.describe()}\nLoading it would leave '
            'those weights at their initial values. Check the config and '
            f'checkpoint; to load the parts that fit anyway, pass {opt_in}.')
    print_log(f'{source}: loaded partially ({opt_in}); these weights keep '
              f'their initial values:\n{fit.describe()}', logger='current',
              level=logging.WARNING)
    return fit


def load_checkpoint_strict(model: nn.Module,
                           filename: str,
                           map_location: str = 'cpu',
                           allow_partial: bool = False,
                           opt_in: str = 'allow_partial=True') -> dict:
    """``mmengine.runner.load_checkpoint`` that refuses a checkpoint that
    does not fit (see :func:`check_checkpoint_fits`).

    Args:
        model (nn.Module): The model to load into.
        filename (str): Checkpoint file or URL.
        map_location (str): Where tensors are loaded. Defaults to 'cpu'.
        allow_partial (bool): Load only the tensors that fit.
        opt_in (str): How the caller allows partial loading.

    Returns:
        dict: The loaded checkpoint.
    """
    checkpoint = _load_checkpoint(filename, map_location=map_location)
    check_checkpoint_fits(model, checkpoint, filename, allow_partial, opt_in)
    return _load_checkpoint_to_model(
        unwrap_model(model), checkpoint, revise_keys=DEFAULT_REVISE_KEYS)


__all__ = [
    'ALLOW_PARTIAL_FLAG', 'CheckpointFit', 'CheckpointMismatchError',
    'add_allow_partial_argument', 'check_checkpoint_fits', 'checkpoint_fit',
    'load_checkpoint_strict', 'unwrap_model'
]
