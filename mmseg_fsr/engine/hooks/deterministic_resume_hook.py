"""Per-iteration seeding, so that a resumed run is bit-identical to an
uninterrupted one."""
import logging
import random
from typing import Optional

import numpy as np
import torch
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmseg.registry import HOOKS

_MODEL_STREAM, _DATA_STREAM = 0, 1
_META_KEY = 'deterministic_resume'
# what a resume must keep for bit-identity, recorded in the mark
_LOADER_SETTINGS = ('batch_size', 'num_workers', 'world_size')


def loader_settings(runner) -> dict:
    """Per-rank batch size, worker processes and world size of a run."""
    loader = runner.train_dataloader
    return dict(batch_size=int(loader.batch_size),
                num_workers=int(loader.num_workers),
                world_size=int(get_world_size()))


def seed_all(seed_words) -> None:
    """Seed python's, numpy's and torch's global generators (CPU and every
    CUDA device) from a tuple of non-negative integers."""
    seq = np.random.SeedSequence([int(w) for w in seed_words])
    state = seq.generate_state(4, np.uint32)
    seed64 = (int(state[0]) << 32) | int(state[1])
    random.seed(seed64)
    np.random.seed(state)
    torch.manual_seed(seed64)  # also seeds every CUDA device


class _ReseedingIterator:
    """Wraps ``IterBasedTrainLoop.dataloader_iterator``: seeds the global
    generators from (seed, batch number, rank) before each batch is drawn.

    That makes what a single-process data loader (``num_workers=0``) draws
    for batch ``n`` independent of everything before it. It also allows a
    cheap skip: on resume, mmengine draws and discards the ``iter`` batches
    already trained; with a single-process loader only the sampler is
    advanced for those (no file is read), because no later batch depends on
    them. Worker processes keep their own generators (seeded once by
    mmengine's ``worker_init_fn``), so with ``num_workers > 0`` the skipped
    batches are drawn in full, as mmengine does, which replays the
    workers' streams exactly.
    """

    def __init__(self, inner, reseed, skip: int) -> None:
        self._inner = inner
        self._reseed = reseed
        self._skip = skip
        self._count = 0

    def __iter__(self):
        return self

    def _cheap_skip(self) -> bool:
        from torch.utils.data.dataloader import _SingleProcessDataLoaderIter
        torch_iter = getattr(self._inner, '_iterator', None)
        if not isinstance(torch_iter, _SingleProcessDataLoaderIter):
            return False
        try:
            torch_iter._next_index()
        except StopIteration:  # end of an epoch: let mmengine restart it
            return False
        torch_iter._num_yielded += 1
        return True

    def __next__(self):
        n = self._count
        self._count += 1
        if n < self._skip and self._cheap_skip():
            return None  # discarded by IterBasedTrainLoop's resume skip
        self._reseed(n)
        return next(self._inner)

    def __getattr__(self, name):
        return getattr(self._inner, name)


@HOOKS.register_module()
class DeterministicResumeHook(Hook):
    """Make a run killed and resumed from a checkpoint end bit-identical to
    the uninterrupted run.

    mmengine's checkpoints keep no generator state. A resumed run starts
    with the generators as they were after start-up, not after ``iter``
    iterations, and validation (which draws a seed for every new data loader
    iterator) and single-process data loading also consume them. Instead of
    saving generator states, this hook makes every random draw a pure
    function of (seed, iteration, rank):

    - ``before_train_iter`` (priority ``HIGHEST``): python ``random``,
      numpy's global generator and torch (CPU + CUDA) are seeded from
      (seed, iteration), the model's stream (drop path, token masks, the
      device-side crop of ``FSRSegmentor``). Like mmengine, the ranks share
      this stream unless ``randomness.diff_rank_seed=True``;
    - right before batch ``n`` is drawn from the training data loader: seeded
      from (seed, n, rank), the main-process data stream
      (``num_workers=0``). Worker processes are seeded by mmengine's
      ``worker_init_fn`` and replayed by its resume skip.

    The sampler position is restored by ``IterBasedTrainLoop``, which skips
    the ``iter`` batches already trained (``iter x accumulative_counts``
    with ``AccumulatingIterBasedTrainLoop``), cheaply, without reading
    files, for single-process loaders. Everything else that changes during
    training (weights, teacher, loss centers, optimiser, schedulers,
    message hub) is already in mmengine's checkpoints.

    The seed is the runner's (``randomness.seed``; mmengine draws one and
    stores it in the checkpoint when it is None). Checkpoints are marked
    with ``meta['deterministic_resume']`` (seed, batch size per rank,
    data loader workers, world size); resuming from a checkpoint without
    the mark, or with another batch size, worker count or world size,
    logs a warning naming the old and new values: the run continues
    reproducibly, but not bit-identically to the run that wrote it.

    Args:
        seed (int, optional): Base seed. Defaults to ``runner.seed``.
    """

    priority = 'HIGHEST'

    def __init__(self, seed: Optional[int] = None) -> None:
        self.seed = seed
        self._base = None
        self._checkpoint_marked = None
        self._checkpoint_settings = None

    def _base_seed(self, runner) -> int:
        seed = self.seed if self.seed is not None else runner.seed
        return int(seed) % (1 << 63)

    def _reseed_data(self, batch: int) -> None:
        seed_all((self._base, _DATA_STREAM, batch, get_rank()))

    def before_train(self, runner) -> None:
        """Wrap the training data loader iterator (iteration-based loops)."""
        self._base = self._base_seed(runner)
        loop = runner.train_loop
        if hasattr(loop, 'dataloader_iterator'):
            if not isinstance(loop.dataloader_iterator, _ReseedingIterator):
                # a step of AccumulatingIterBasedTrainLoop takes N batches
                batches_per_iter = getattr(loop, 'accumulative_counts', 1)
                loop.dataloader_iterator = _ReseedingIterator(
                    loop.dataloader_iterator, self._reseed_data,
                    skip=runner.iter * batches_per_iter)
        else:
            print_log(
                f'{type(self).__name__}: {type(loop).__name__} has no '
                'dataloader_iterator; only the model\'s random draws are '
                'seeded per iteration',
                logger='current',
                level=logging.WARNING)
        if runner.iter > 0 and self._checkpoint_marked is False:
            print_log(
                f'{type(self).__name__}: the resumed checkpoint was written '
                'without this hook, so the run continues reproducibly but '
                'not bit-identically to the run that wrote it',
                logger='current', level=logging.WARNING)
        if runner.iter > 0 and self._checkpoint_settings:
            self._warn_changed_settings(runner)

    def _warn_changed_settings(self, runner) -> None:
        """Warn when the resumed run loads data otherwise than the run
        that wrote the checkpoint."""
        now = loader_settings(runner)
        changed = [
            f'{key} {self._checkpoint_settings[key]} -> {now[key]}'
            for key in _LOADER_SETTINGS
            if key in self._checkpoint_settings
            and self._checkpoint_settings[key] != now[key]
        ]
        if changed:
            print_log(
                f'{type(self).__name__}: resumed with {", ".join(changed)} '
                '(checkpoint -> now). The run continues, but it is not '
                'bit-identical to an uninterrupted run, which needs the '
                'same batch size, worker count and world size.',
                logger='current', level=logging.WARNING)

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        """Seed the model's random stream for this iteration."""
        if self._base is None:
            self._base = self._base_seed(runner)
        seed_all((self._base, _MODEL_STREAM, runner.iter))

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Mark the checkpoint (plain ints: loads under weights_only)."""
        checkpoint.setdefault('meta', {})[_META_KEY] = dict(
            version=1, seed=self._base_seed(runner),
            **loader_settings(runner))

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Remember whether the checkpoint came from a seeded run, and
        its data loading settings."""
        mark = checkpoint.get('meta', {}).get(_META_KEY)
        self._checkpoint_marked = mark is not None
        self._checkpoint_settings = {
            key: mark[key]
            for key in _LOADER_SETTINGS if key in mark
        } if mark else None
