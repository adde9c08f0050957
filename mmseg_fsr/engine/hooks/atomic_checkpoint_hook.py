"""``CheckpointHook`` whose saves never lose the last complete checkpoint."""
import os
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook
from mmseg.registry import HOOKS

# suffix of a checkpoint being written; never named by last_checkpoint
PARTIAL_SUFFIX = '.part'


def fsync_path(path: str) -> None:
    """Flush a file's (or a directory's entries') data to the disk."""
    flags = os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0) \
        if osp.isdir(path) else os.O_RDONLY
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, fsync, rename:
    readers see the old content or the new one, never a part."""
    partial = path + PARTIAL_SUFFIX
    with open(partial, 'w') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)
    fsync_path(osp.dirname(osp.abspath(path)))


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` with atomic saves to a local disk.

    mmengine's hook deletes the oldest checkpoint (``max_keep_ckpts``),
    points ``last_checkpoint`` at the new file and then writes it in place.
    A failed write (full disk, quota, a kill) leaves a truncated file that
    ``last_checkpoint`` names, and with ``max_keep_ckpts=1`` the only
    complete checkpoint is already gone: ``--resume`` cannot continue.

    Here a checkpoint is written to ``.<name>.part``, fsynced and renamed
    to its name; only then is ``last_checkpoint`` rewritten (the same way)
    and are the checkpoints beyond ``max_keep_ckpts`` removed. When the
    write fails, the partial file is removed, the hook's bookkeeping is
    restored and the error is raised with a note naming the last complete
    checkpoint, which ``last_checkpoint`` still names. Every argument is
    ``CheckpointHook``'s. Other file backends (``backend_args``) save as
    mmengine does; ``save_best`` checkpoints too.
    """

    def _save_checkpoint_with_step(self, runner, step, meta):
        if not isinstance(self.file_backend, LocalBackend):
            return super()._save_checkpoint_with_step(runner, step, meta)
        kept = getattr(self, 'keep_ckpt_ids', None)  # max_keep_ckpts > 0
        kept_before, last_before = list(kept or ()), self.last_ckpt
        expired = []
        if kept is not None and not (kept and kept[-1] == step):
            if len(kept) == self.max_keep_ckpts:
                expired.append(kept.popleft())
            kept.append(step)
            # the checkpoint records the state after this save (as mmengine)
            runner.message_hub.update_info('keep_ckpt_ids', list(kept))
        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = osp.join(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        partial_name = f'.{ckpt_filename}{PARTIAL_SUFFIX}'
        partial = osp.join(self.out_dir, partial_name)
        try:
            runner.save_checkpoint(
                self.out_dir,
                partial_name,
                self.file_client_args,
                save_optimizer=self.save_optimizer,
                save_param_scheduler=self.save_param_scheduler,
                meta=meta,
                by_epoch=self.by_epoch,
                backend_args=self.backend_args,
                **self.args)
            if is_main_process():
                fsync_path(partial)
                os.replace(partial, self.last_ckpt)
                fsync_path(self.out_dir)
        except BaseException as err:
            self._undo_save(runner, kept_before, last_before, partial, err)
            raise
        if not is_main_process():
            return
        write_text_atomic(
            osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        for old_step in expired:
            old = osp.join(self.out_dir, self.filename_tmpl.format(old_step))
            if osp.isfile(old):
                os.remove(old)

    def _undo_save(self, runner, kept_before, last_before, partial: str,
                   err: BaseException) -> None:
        """Forget a failed save: remove its partial file, restore the kept
        steps and ``last_ckpt``, and say in ``err`` what is left."""
        if osp.exists(partial):
            os.remove(partial)
        if getattr(self, 'keep_ckpt_ids', None) is not None:
            self.keep_ckpt_ids.clear()
            self.keep_ckpt_ids.extend(kept_before)
            runner.message_hub.update_info('keep_ckpt_ids', kept_before)
        self.last_ckpt = last_before
        runner.message_hub.update_info('last_ckpt', last_before)
        pointer = osp.join(runner.work_dir, 'last_checkpoint')
        complete = None
        if osp.isfile(pointer):
            with open(pointer) as f:
                complete = f.read().strip()
        failed = osp.basename(partial)[1:-len(PARTIAL_SUFFIX)]
        err.add_note(
            f'{type(self).__name__}: {failed} was not written. ' +
            (f'The last complete checkpoint, {complete}, is kept and named '
             f'by {pointer}: continue from it with --resume.'
             if complete else 'No checkpoint of this run was complete.'))
