"""The 4-GPU recipe on one GPU, step for step (CPU, real Runner).

Four set-ups train the tiny FSR model on the same fixed images for 8
optimiser steps of 8 images, crossing the decoder's start (step 2) and the
switch from random to uncertainty masking (step 4): (a) 4 gloo DDP ranks x
2 images, (b) one process, 2 images, ``AccumulatingIterBasedTrainLoop``
with ``accumulative_counts=4``, (c) one process, 8 images; and (d) 2 DDP
ranks x 2 images x ``accumulative_counts=2`` (accumulate, then all-reduce).
Student, teacher, both DINO centres and the AdamW state agree. mmengine's
plain accumulation (iterations = micro-batches) does not. See
step_setup_worker.py.

Agreement is measured per tensor as ``||a - b|| / ||b||``: the set-ups sum
in different orders, and AdamW normalises each element's gradient, so the
rounding of an element whose gradient is tiny moves it by up to ``lr`` per
step; norm-wise the set-ups agree to about 2e-6.
"""
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch

WORKER = osp.join(osp.dirname(osp.abspath(__file__)), 'step_setup_worker.py')
TOLERANCE = 1e-5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_worker(out_dir, setups, **env):
    env = dict(os.environ, OMP_NUM_THREADS='1', **env)
    return subprocess.Popen(
        [sys.executable, WORKER, str(out_dir), *setups], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait(procs):
    for proc in procs:
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, output[-3000:]


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """OUT_DIR with a <setup>.pth of every set-up."""
    out = tmp_path_factory.mktemp('step_setups')
    wait([run_worker(out, ['accum', 'batch8', 'plain_accum'])])
    for setup, ranks in (('ddp', 4), ('ddp_accum', 2)):
        port = str(free_port())
        wait([
            run_worker(out, [setup], RANK=str(rank), LOCAL_RANK=str(rank),
                       WORLD_SIZE=str(ranks), MASTER_ADDR='127.0.0.1',
                       MASTER_PORT=port) for rank in range(ranks)
        ])
    return out


def relative_differences(a: dict, b: dict) -> dict:
    """``||a - b|| / ||b||`` of every tensor (0 for equal empty ones)."""
    assert a.keys() == b.keys()
    result = {}
    for key, value in b.items():
        value, other = value.double(), a[key].double()
        norm = value.norm()
        result[key] = float((other - value).norm() / norm) if norm else \
            float((other - value).norm())
    return result


def largest(diffs: dict, prefix: str = '') -> tuple:
    return max((v, k) for k, v in diffs.items() if k.startswith(prefix))


def test_ddp_accumulation_and_batch8_agree_step_for_step(trained):
    states = {s: torch.load(trained / f'{s}.pth')
              for s in ('ddp', 'accum', 'batch8', 'ddp_accum')}
    for part in ('student.', 'teacher.', 'uncertain_loss.center',
                 'certain_loss.center', 'adamw.'):
        assert any(k.startswith(part) for k in states['batch8']), part
    # the run got somewhere: 8 AdamW steps, moved teacher and centres
    assert int(states['batch8']['adamw.0.step']) == 8
    assert states['batch8']['uncertain_loss.center'].abs().sum() > 0
    for a, b in (('ddp', 'batch8'), ('accum', 'batch8'), ('accum', 'ddp'),
                 ('ddp_accum', 'ddp')):
        diffs = relative_differences(states[a], states[b])
        worst, key = largest(diffs)
        print(f'{a} vs {b}: largest relative difference {worst:.2e} '
              f'({key})')
        assert worst <= TOLERANCE, (a, b, key, worst)


def test_plain_mmengine_accumulation_does_not_agree(trained):
    """Without the loop the teacher moves and the centres update once per
    micro-batch, and the schedules run 4 times as fast."""
    diffs = relative_differences(torch.load(trained / 'plain_accum.pth'),
                                 torch.load(trained / 'batch8.pth'))
    for part in ('teacher.', 'uncertain_loss.center', 'certain_loss.center',
                 'student.'):
        worst, key = largest(diffs, part)
        print(f'plain accumulation vs batch8, {part}: {worst:.2e} ({key})')
        assert worst > 100 * TOLERANCE, (part, key, worst)
