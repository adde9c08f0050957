"""FSR through the real mmengine Runner: train, EMA teacher, resume, eval."""
import copy
import math
import os.path as osp

import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner


class RecordBeforeTrain(Hook):
    """Calls ``fn(runner)`` once weights are initialised or resumed."""

    priority = 'VERY_LOW'

    def __init__(self, fn):
        self.fn = fn

    def before_train(self, runner):
        self.fn(runner)


def state(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict, after: dict) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before)


def test_train_save_resume_evaluate(tiny_cfg):
    cfg = tiny_cfg(max_iters=4)
    runner = Runner.from_cfg(copy.deepcopy(cfg))
    model = runner.model
    # Runner.train() initialises the weights; snapshot right after that.
    initial = {}
    runner.register_hook(
        RecordBeforeTrain(lambda r: initial.update(
            student=state(model.backbone),
            teacher=state(model.teacher['backbone']))))
    runner.train()

    student, teacher = state(model.backbone), state(model.teacher['backbone'])
    assert changed(initial['student'], student), 'student did not train'
    assert changed(initial['teacher'], teacher), 'teacher did not move'
    assert changed(student, teacher), 'teacher equals the student'
    # EMA: the teacher stays between where it started and the student.
    key = 'layers.0.ffn.layers.1.weight'
    start, now, target = (initial['teacher'][key], teacher[key],
                          student[key])
    assert (now - start).abs().sum() < (target - start).abs().sum()

    logged = runner.message_hub.log_scalars
    for name in ('loss_cls', 'loss_cls_aux', 'loss_aff', 'decode.loss_seg',
                 'loss_fsr_u', 'loss_fsr_c'):
        values = logged[f'train/{name}'].data[0]
        assert len(values) and all(math.isfinite(v) for v in values), name
    assert len(logged['train/loss_cls'].data[0]) == 4
    # the decoder loss starts at iteration 1 (loss_start_iters.seg=1)
    assert len(logged['train/decode.loss_seg'].data[0]) == 3

    work_dir = cfg.work_dir
    for it in (2, 4):
        assert osp.isfile(osp.join(work_dir, f'iter_{it}.pth'))
    saved = torch.load(osp.join(work_dir, 'iter_4.pth'), map_location='cpu')
    assert any(k.startswith('teacher.') for k in saved['state_dict'])
    assert 'uncertain_loss.center' in saved['state_dict']

    # Resume from iteration 2 and finish the same 4 iterations.
    resumed_cfg = copy.deepcopy(cfg)
    resumed_cfg.resume = True
    resumed_cfg.load_from = osp.join(work_dir, 'iter_2.pth')
    resumed = Runner.from_cfg(resumed_cfg)
    resumed_hub_iters = []
    resumed.register_hook(
        RecordBeforeTrain(lambda r: resumed_hub_iters.append(r.iter)))
    resumed.train()
    assert resumed_hub_iters == [2]
    assert resumed.iter == 4

    # Evaluate the final checkpoint: decoder, CAM and PAR mIoU in one pass.
    test_cfg = copy.deepcopy(cfg)
    test_cfg.load_from = osp.join(work_dir, 'iter_4.pth')
    metrics = Runner.from_cfg(test_cfg).test()
    for key in ('mIoU', 'cam/mIoU', 'par/mIoU'):
        assert 0 <= metrics[key] <= 100, key
