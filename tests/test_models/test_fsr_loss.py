import math

import pytest
import torch
from mmseg.registry import MODELS

import mmseg_fsr  # noqa: F401  (registers the modules)
from mmseg_fsr.models.losses import fsr_loss

TS, TT, W = 0.5, 0.25, 0.1  # student temp, teacher temp, loss weight


def _loss(type, **kwargs):
    cfg = dict(
        type=type,
        out_channels=3,
        student_temp=TS,
        teacher_temp=TT,
        warmup_teacher_temp=TT,
        loss_weight=W)
    return MODELS.build(dict(cfg, **kwargs))


def _ce(s, t, c=(0., 0., 0.)):
    """-sum_k softmax((t - c) / TT)_k * log softmax(s / TS)_k, by hand."""
    et = [math.exp((ti - ci) / TT) for ti, ci in zip(t, c)]
    p = [e / sum(et) for e in et]
    log_z = math.log(sum(math.exp(si / TS) for si in s))
    return -sum(pk * (si / TS - log_z) for pk, si in zip(p, s))


def test_certain_loss_uniform_teacher_is_log3():
    loss = _loss('FSRCertainLoss')
    out = loss(torch.zeros(1, 3), torch.ones(1, 3), 50, 100)
    assert out.item() == pytest.approx(W * math.log(3), rel=1e-6)


def test_certain_loss_value_and_center_update():
    loss = _loss('FSRCertainLoss')
    assert loss.loss_name == 'loss_fsr_c'
    assert 'center' in loss.state_dict()
    s = [[1., 2., 3.], [0.5, -1., 0.]]
    t = [[3., 1., 2.], [1., 1., 4.]]
    out = loss(torch.tensor(s), torch.tensor(t), 99, 100)
    expected = W * (_ce(s[0], t[0]) + _ce(s[1], t[1])) / 2
    assert out.item() == pytest.approx(expected, rel=1e-5)
    # center = 0.9 * 0 + 0.1 * mean([[3, 1, 2], [1, 1, 4]]).
    assert torch.allclose(loss.center, torch.tensor([[0.2, 0.1, 0.3]]))
    # The next call is centred with it.
    out = loss(torch.tensor(s[:1]), torch.tensor(t[:1]), 99, 100)
    expected = W * _ce(s[0], t[0], c=(0.2, 0.1, 0.3))
    assert out.item() == pytest.approx(expected, rel=1e-5)
    # 0.9 * 0.2 + 0.1 * 3 etc.
    assert torch.allclose(loss.center, torch.tensor([[0.48, 0.19, 0.47]]))


def test_center_not_updated_in_eval_mode():
    loss = _loss('FSRCertainLoss').eval()
    loss(torch.zeros(2, 3), torch.ones(2, 3), 99, 100)
    assert not loss.center.any()


def test_center_uses_global_sum_and_count(monkeypatch):
    """Simulate a second rank holding 3 tokens of value [4, 4, 4]."""

    def fake_all_reduce(data, op='sum'):
        assert op == 'sum'
        data += torch.tensor([12., 12., 12., 3.])

    monkeypatch.setattr(fsr_loss.dist, 'all_reduce', fake_all_reduce)
    loss = _loss('FSRUncertainLoss', center_momentum=0.)
    teacher = torch.tensor([[[1., 0., 0.]]])  # 1 token on this rank
    loss(torch.zeros(1, 3), teacher, torch.ones(1, 1, dtype=torch.bool), 99,
         100)
    # (1 + 12) / 4, (0 + 12) / 4, (0 + 12) / 4; not the mean of means.
    assert torch.allclose(loss.center, torch.tensor([[3.25, 3., 3.]]))


def test_center_moves_once_per_accumulated_step(monkeypatch):
    """Micro-batches of 1 and 2 rows (AccumulatingIterBasedTrainLoop's
    MessageHub info): summed, all-reduced once, then one EMA step with the
    mean of the 3 rows."""
    from mmseg_fsr.models.utils.accumulation import publish_micro_batch
    reductions = []
    monkeypatch.setattr(fsr_loss.dist, 'all_reduce',
                        lambda data, op='sum': reductions.append(data))
    loss = _loss('FSRCertainLoss')
    try:
        publish_micro_batch(0, 2)
        loss(torch.zeros(1, 3), torch.tensor([[3., 0., 0.]]), 99, 100)
        assert not loss.center.any() and reductions == []
        publish_micro_batch(1, 2)
        # the step's loss is centred with the center before the step
        out = loss(torch.zeros(2, 3), torch.tensor([[0., 3., 0.],
                                                    [0., 0., 3.]]), 99, 100)
        assert out.item() == pytest.approx(
            W * _ce([0., 0., 0.], [0., 3., 0.]), rel=1e-5)
        assert len(reductions) == 1
        assert torch.allclose(loss.center, torch.tensor([[0.1, 0.1, 0.1]]))
    finally:
        publish_micro_batch(0, 1)
    # no accumulation: every call is a step
    loss(torch.zeros(1, 3), torch.tensor([[1., 1., 1.]]), 99, 100)
    assert torch.allclose(loss.center, torch.tensor([[0.19, 0.19, 0.19]]))


def test_teacher_temperature_schedule():
    """0.04 -> 0.07 over int(T / 8) iterations, reached one step early."""
    loss = MODELS.build(dict(type='FSRCertainLoss'))
    # T = 80: warm-up of 10 iterations, 0.03 / 9 per iteration
    assert loss.teacher_temperature(0, 80) == pytest.approx(0.04)
    assert loss.teacher_temperature(3, 80) == pytest.approx(0.05)
    assert loss.teacher_temperature(9, 80) == pytest.approx(0.07)
    assert loss.teacher_temperature(10, 80) == pytest.approx(0.07)
    assert loss.teacher_temperature(79, 80) == pytest.approx(0.07)
    # a run of 8 iterations has a one-iteration warm-up at 0.04
    assert loss.teacher_temperature(0, 8) == pytest.approx(0.04)
    assert loss.teacher_temperature(1, 8) == pytest.approx(0.07)
    no_warmup = MODELS.build(
        dict(type='FSRCertainLoss', teacher_temp_warmup_ratio=0.))
    assert no_warmup.teacher_temperature(0, 80) == pytest.approx(0.07)


def test_temperature_used_by_loss():
    loss = _loss('FSRCertainLoss', warmup_teacher_temp=0.05)
    s, t = [[1., 2., 3.]], [[3., 1., 2.]]
    out = loss(torch.tensor(s), torch.tensor(t), 99, 100)
    assert out.item() == pytest.approx(W * _ce(s[0], t[0]), rel=1e-5)
    loss.center.zero_()
    warm = loss(torch.tensor(s), torch.tensor(t), 0, 100)
    assert warm.item() != pytest.approx(out.item(), rel=1e-3)


def test_uncertain_loss_averages_per_image_then_over_images():
    """Image 0 has one masked token, image 1 two: (ce_0 + mean(ce_1)) / 2,
    as the authors' per-image average; the center follows all tokens."""
    loss = _loss('FSRUncertainLoss')
    assert loss.loss_name == 'loss_fsr_u'
    s = [[1., 2., 3.], [2., 0., 1.], [-1., 1., 0.]]  # masked, row-major
    t = [[[3., 1., 2.], [0., 2., 0.]], [[1., 1., 4.], [0., 0., 3.]]]
    mask = torch.tensor([[True, False], [True, True]])
    out = loss(torch.tensor(s), torch.tensor(t), mask, 99, 100)
    expected = W * (_ce(s[0], t[0][0]) +
                    (_ce(s[1], t[1][0]) + _ce(s[2], t[1][1])) / 2) / 2
    assert out.item() == pytest.approx(expected, rel=1e-5)
    # Center: mean over all 4 teacher tokens, masked or not.
    assert torch.allclose(loss.center, 0.1 * torch.tensor([[1., 1., 2.25]]))


def test_uncertain_loss_checks_rows_against_mask():
    loss = _loss('FSRUncertainLoss')
    with pytest.raises(ValueError, match='2 rows.*masks 1'):
        loss(torch.zeros(2, 3), torch.zeros(1, 2, 3),
             torch.tensor([[True, False]]), 99, 100)


def test_uncertain_loss_zero_when_nothing_masked():
    loss = _loss('FSRUncertainLoss')
    student = torch.randn(0, 3, requires_grad=True)
    out = loss(student, torch.randn(2, 4, 3),
               torch.zeros(2, 4, dtype=torch.bool), 30, 100)
    assert out.item() == 0. and torch.isfinite(out)
    out.backward()
    assert student.grad.shape == (0, 3)


@pytest.mark.parametrize('type', ['FSRCertainLoss', 'FSRUncertainLoss'])
def test_gradients_reach_student_only(type):
    loss = _loss(type)
    student = torch.randn(2, 3, requires_grad=True)
    if type == 'FSRCertainLoss':
        teacher, args = torch.randn(2, 3, requires_grad=True), ()
    else:  # two masked tokens, one per image
        teacher = torch.randn(2, 4, 3, requires_grad=True)
        args = (torch.tensor([[1, 0, 0, 0], [0, 0, 1, 0]]).bool(), )
    loss(student, teacher, *args, 50, 100).backward()
    assert student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_center_unchanged_when_no_token_rows():
    """No teacher rows anywhere (empty batch): the center stays."""
    from mmseg_fsr.models.losses import FSRUncertainLoss
    loss = FSRUncertainLoss(out_channels=3).train()
    loss.center.fill_(0.5)
    empty = torch.zeros(0, 3, requires_grad=True)
    value = loss(empty, torch.zeros(1, 0, 3),
                 torch.ones(1, 0, dtype=torch.bool), 99, 100)
    assert value.item() == 0
    assert torch.equal(loss.center, torch.full((1, 3), 0.5))
