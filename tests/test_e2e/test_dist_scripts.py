"""tools/dist_train.sh and tools/dist_test.sh on a machine without CUDA.

The scripts themselves run (torchrun, 2 CPU processes, gloo): 10 tiny
iterations, both ranks end with bit-identical weights; a run resumed from
the iteration-5 checkpoint ends bit-identical to the uninterrupted one; the
two-process test gives the single-process metrics.
"""
import glob
import importlib.util
import json
import os
import os.path as osp
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mmseg_fsr.testing import tiny_fsr_config

REPO = Path(__file__).resolve().parents[2]

DUMP_HOOK = textwrap.dedent('''
    """Saves each rank's weights at the end of training."""
    import os.path as osp

    import torch
    from mmengine.dist import get_rank
    from mmengine.hooks import Hook
    from mmengine.model import is_model_wrapper
    from mmseg.registry import HOOKS


    @HOOKS.register_module()
    class DumpRankWeights(Hook):
        priority = 'LOWEST'

        def after_train(self, runner):
            model = runner.model
            model = model.module if is_model_wrapper(model) else model
            torch.save({k: v.detach().cpu()
                        for k, v in model.state_dict().items()},
                       osp.join(runner.work_dir, f'rank{get_rank()}.pth'))
''')

pytestmark = pytest.mark.skipif(
    shutil.which('bash') is None, reason='needs bash')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture
def setup(synthetic_voc, tmp_path):
    (tmp_path / 'fsr_test_dump_hook.py').write_text(DUMP_HOOK)
    cfg = tiny_fsr_config(synthetic_voc, str(tmp_path / 'unused'),
                          max_iters=10)
    cfg.default_hooks.checkpoint.interval = 5
    cfg.custom_imports = dict(
        imports=['mmseg_fsr', 'fsr_test_dump_hook'],
        allow_failed_imports=False)
    cfg.custom_hooks = list(cfg.custom_hooks) + [
        dict(type='DumpRankWeights')
    ]
    config = str(tmp_path / 'tiny_dist.py')
    cfg.dump(config)
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        PYTHONPATH=os.pathsep.join(
            [str(tmp_path), os.environ.get('PYTHONPATH', '')]),
        OMP_NUM_THREADS='1',
        CUDA_VISIBLE_DEVICES='')  # also on a GPU machine: the CPU path
    return config, env


def _script(env, script, *args):
    env = dict(env, PORT=str(_free_port()))
    res = subprocess.run(['bash', str(REPO / 'tools' / script), *args],
                         env=env, capture_output=True, text=True,
                         timeout=600, cwd=REPO)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    return res.stdout + res.stderr


def _equal(a: dict, b: dict) -> list:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


def _metrics(work_dir) -> dict:
    logs = glob.glob(osp.join(work_dir, '*', '*.json'))
    assert len(logs) == 1, logs
    with open(logs[0]) as f:
        text = f.read()
    # mmengine's LoggerHook dumps the test metrics from every rank into the
    # same file, so a two-process test may leave a second copy behind it
    return json.JSONDecoder().raw_decode(text)[0]


def test_dist_train_resume_and_test_on_cpu(setup, tmp_path):
    config, env = setup
    full, resumed = tmp_path / 'full', tmp_path / 'resumed'

    _script(env, 'dist_train.sh', config, '2', '--work-dir', str(full))
    rank0, rank1 = (torch.load(full / f'rank{r}.pth') for r in (0, 1))
    assert _equal(rank0, rank1) == []  # DDP kept the ranks identical
    saved = torch.load(full / 'iter_10.pth', map_location='cpu')
    assert _equal(saved['state_dict'], rank0) == []

    _script(env, 'dist_train.sh', config, '2', '--work-dir', str(resumed),
            '--resume', str(full / 'iter_5.pth'))
    for r in (0, 1):
        assert _equal(torch.load(resumed / f'rank{r}.pth'), rank0) == []

    _script(env, 'dist_test.sh', config, str(full / 'iter_10.pth'), '2',
            '--work-dir', str(tmp_path / 'test2'))
    two = _metrics(tmp_path / 'test2')

    spec = importlib.util.spec_from_file_location('fsr_tools_test',
                                                  REPO / 'tools' / 'test.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    sys.path.insert(0, str(tmp_path))  # the dump hook's module
    try:
        tool.main([
            config, str(full / 'iter_10.pth'), '--work-dir',
            str(tmp_path / 'test1')
        ])
    finally:
        sys.path.remove(str(tmp_path))
    one = _metrics(tmp_path / 'test1')
    for key in ('mIoU', 'cam/mIoU', 'par/mIoU'):
        assert two[key] == one[key], key
