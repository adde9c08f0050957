"""tools/slurm_train.sh and tools/slurm_test.sh with a stand-in ``srun``.

The stand-in records the srun options and the task's command, then runs
the task on this machine as the one task of a one-node job: 1 tiny
iteration, then the test of its checkpoint.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# mmengine's slurm process group sets a CUDA device before it starts, which
# a machine without CUDA cannot do: the task runs with --launcher none
FAKE_SRUN = r'''#!/usr/bin/env bash
{ echo "PYTHONPATH=$PYTHONPATH"; printf '%s\n' "$@"; } > "$SRUN_LOG"
while [ "$1" != "$PYTHON" ]; do shift; done
task=()
for arg in "$@"; do
    [ "$arg" = --launcher=slurm ] && arg=--launcher=none
    task+=("$arg")
done
exec "${task[@]}"
'''

# the scripts' variables, and the srun options they give
SLURM_VARIABLES = dict(GPUS='1', GPUS_PER_NODE='1', CPUS_PER_TASK='2',
                       SRUN_ARGS='--time=10 --mem=2G')
SRUN_OPTIONS = [
    '-p', 'cpu', '--job-name=fsr', '--gres=gpu:1', '--ntasks=1',
    '--ntasks-per-node=1', '--cpus-per-task=2', '--kill-on-bad-exit=1',
    '--time=10', '--mem=2G'
]

pytestmark = pytest.mark.skipif(
    shutil.which('bash') is None, reason='needs bash')


@pytest.fixture
def slurm(tmp_path, tiny_cfg):
    """A dumped 1-iteration tiny config and the environment of a machine
    whose ``srun`` is the stand-in; returns (config, env, srun log)."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'srun').write_text(FAKE_SRUN)
    (bin_dir / 'srun').chmod(0o755)
    config = tmp_path / 'tiny.py'
    tiny_cfg(1).dump(str(config))
    log = tmp_path / 'srun.log'
    env = dict(os.environ, **SLURM_VARIABLES)
    env.update(
        PATH=os.pathsep.join([str(bin_dir), os.environ['PATH']]),
        PYTHON=sys.executable, SRUN_LOG=str(log), OMP_NUM_THREADS='1',
        CUDA_VISIBLE_DEVICES='')
    return str(config), env, log


def _run(env, script, *args):
    res = subprocess.run(['bash', str(REPO / 'tools' / script), *args],
                         env=env, capture_output=True, text=True,
                         timeout=600, cwd=REPO)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]


def _srun_call(log: Path) -> list:
    """The recorded call: [PYTHONPATH's first entry, srun arguments...]."""
    pythonpath, *args = log.read_text().splitlines()
    return [pythonpath.split('=', 1)[1].split(os.pathsep)[0]] + args


def test_slurm_train_and_test(slurm, tmp_path):
    config, env, log = slurm
    work = tmp_path / 'work'
    tools = REPO / 'tools'
    _run(env, 'slurm_train.sh', 'cpu', 'fsr', config, '--work-dir',
         str(work))
    assert _srun_call(log) == [str(tools / '..'), *SRUN_OPTIONS] + [
        sys.executable, '-u', str(tools / 'train.py'), config,
        '--launcher=slurm', '--work-dir', str(work)
    ]
    checkpoint = work / 'iter_1.pth'
    assert checkpoint.is_file()

    _run(env, 'slurm_test.sh', 'cpu', 'fsr', config, str(checkpoint),
         '--work-dir', str(tmp_path / 'test'))
    assert _srun_call(log) == [str(tools / '..'), *SRUN_OPTIONS] + [
        sys.executable, '-u', str(tools / 'test.py'), config,
        str(checkpoint), '--launcher=slurm', '--work-dir',
        str(tmp_path / 'test')
    ]
    [metrics] = (tmp_path / 'test').glob('*/*.json')
    assert 'mIoU' in json.loads(metrics.read_text().splitlines()[0])
