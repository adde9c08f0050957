"""Two CPU processes (gloo) train FSR through the Runner with DDP.

Each rank sees different images, so the loss centers agree only if their
updates are all-reduced, and the teachers agree only if the hook updates
them from identical (gradient-synchronised) students.
"""
import os
import socket
import subprocess
import sys
import textwrap

import torch

WORKER = textwrap.dedent('''
    import os, sys
    import torch
    import torch.distributed as dist
    from mmengine.runner import Runner
    from mmseg_fsr.testing import tiny_fsr_config

    data_root, work_dir, out = sys.argv[1:4]
    # mmengine's init_dist would call torch.cuda.set_device: initialise the
    # CPU process group first, the Runner then reuses it.
    dist.init_process_group('gloo')
    cfg = tiny_fsr_config(data_root, work_dir, max_iters=3)
    cfg.launcher = 'pytorch'
    cfg.train_dataloader.sampler = dict(type='InfiniteSampler', shuffle=True)
    cfg.default_hooks.checkpoint.interval = 100
    cfg.train_cfg.val_interval = 100
    # CPU modules take no device_ids
    cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel',
                                 find_unused_parameters=True,
                                 device_ids=None)
    runner = Runner.from_cfg(cfg)
    runner.train()
    model = runner.model.module
    torch.save(dict(
        teacher=model.teacher.state_dict(),
        student=model.backbone.state_dict(),
        center_u=model.uncertain_loss.center,
        center_c=model.certain_loss.center), out)
    dist.destroy_process_group()
''')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_ranks_keep_identical_teacher_and_centers(synthetic_voc,
                                                      tmp_path):
    script = tmp_path / 'worker.py'
    script.write_text(WORKER)
    port = free_port()
    procs = []
    for rank in range(2):
        env = dict(
            os.environ,
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE='2',
            MASTER_ADDR='127.0.0.1',
            MASTER_PORT=str(port),
            OMP_NUM_THREADS='1')
        procs.append(
            subprocess.Popen([
                sys.executable,
                str(script), synthetic_voc,
                str(tmp_path / 'work'),
                str(tmp_path / f'rank{rank}.pth')
            ],
                             env=env,
                             stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT,
                             text=True))
    for proc in procs:
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output[-3000:]

    rank0, rank1 = (torch.load(tmp_path / f'rank{r}.pth') for r in range(2))
    for key in ('center_u', 'center_c'):
        assert rank0[key].abs().sum() > 0, f'{key} never updated'
        torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0)
    for part in ('teacher', 'student'):
        for name, value in rank0[part].items():
            torch.testing.assert_close(
                value, rank1[part][name], rtol=0, atol=0, msg=name)
    # the teacher moved away from the (identical) initial student copy
    assert any(not torch.equal(rank0['teacher'][f'backbone.{k}'], v)
               for k, v in rank0['student'].items())
