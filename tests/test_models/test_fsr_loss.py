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
    out = loss(torch.zeros(1, 3), torch.ones(1, 3), progress=0.5)
    assert out.item() == pytest.approx(W * math.log(3), rel=1e-6)


def test_certain_loss_value_and_center_update():
    loss = _loss('FSRCertainLoss')
    assert loss.loss_name == 'loss_fsr_c'
    assert 'center' in loss.state_dict()
    s = [[1., 2., 3.], [0.5, -1., 0.]]
    t = [[3., 1., 2.], [1., 1., 4.]]
    out = loss(torch.tensor(s), torch.tensor(t), progress=1.)
    expected = W * (_ce(s[0], t[0]) + _ce(s[1], t[1])) / 2
    assert out.item() == pytest.approx(expected, rel=1e-5)
    # center = 0.9 * 0 + 0.1 * mean([[3, 1, 2], [1, 1, 4]]).
    assert torch.allclose(loss.center, torch.tensor([[0.2, 0.1, 0.3]]))
    # The next call is centred with it.
    out = loss(torch.tensor(s[:1]), torch.tensor(t[:1]), progress=1.)
    expected = W * _ce(s[0], t[0], c=(0.2, 0.1, 0.3))
    assert out.item() == pytest.approx(expected, rel=1e-5)
    # 0.9 * 0.2 + 0.1 * 3 etc.
    assert torch.allclose(loss.center, torch.tensor([[0.48, 0.19, 0.47]]))


def test_center_not_updated_in_eval_mode():
    loss = _loss('FSRCertainLoss').eval()
    loss(torch.zeros(2, 3), torch.ones(2, 3), progress=1.)
    assert not loss.center.any()


def test_center_uses_global_sum_and_count(monkeypatch):
    """Simulate a second rank holding 3 tokens of value [4, 4, 4]."""

    def fake_all_reduce(data, op='sum'):
        assert op == 'sum'
        data += torch.tensor([12., 12., 12., 3.])

    monkeypatch.setattr(fsr_loss.dist, 'all_reduce', fake_all_reduce)
    loss = _loss('FSRUncertainLoss', center_momentum=0.)
    teacher = torch.tensor([[[1., 0., 0.]]])  # 1 token on this rank
    loss(
        torch.zeros(1, 1, 3),
        teacher,
        torch.ones(1, 1, dtype=torch.bool),
        progress=1.)
    # (1 + 12) / 4, (0 + 12) / 4, (0 + 12) / 4; not the mean of means.
    assert torch.allclose(loss.center, torch.tensor([[3.25, 3., 3.]]))


def test_teacher_temperature_schedule():
    loss = MODELS.build(dict(type='FSRCertainLoss'))
    assert loss.teacher_temperature(0.) == pytest.approx(0.04)
    assert loss.teacher_temperature(0.0625) == pytest.approx(0.055)
    assert loss.teacher_temperature(0.125) == pytest.approx(0.07)
    assert loss.teacher_temperature(1.) == pytest.approx(0.07)
    no_warmup = MODELS.build(
        dict(type='FSRCertainLoss', teacher_temp_warmup_ratio=0.))
    assert no_warmup.teacher_temperature(0.) == pytest.approx(0.07)


def test_temperature_used_by_loss():
    loss = _loss('FSRCertainLoss', warmup_teacher_temp=0.05)
    s, t = [[1., 2., 3.]], [[3., 1., 2.]]
    out = loss(torch.tensor(s), torch.tensor(t), progress=1.)
    assert out.item() == pytest.approx(W * _ce(s[0], t[0]), rel=1e-5)
    loss.center.zero_()
    warm = loss(torch.tensor(s), torch.tensor(t), progress=0.)
    assert warm.item() != pytest.approx(out.item(), rel=1e-3)


def test_uncertain_loss_averages_over_masked_tokens():
    loss = _loss('FSRUncertainLoss')
    assert loss.loss_name == 'loss_fsr_u'
    s = [[[1., 2., 3.], [0., 0., 1.]], [[2., 0., 1.], [-1., 1., 0.]]]
    t = [[[3., 1., 2.], [0., 2., 0.]], [[1., 1., 4.], [0., 0., 3.]]]
    mask = torch.tensor([[True, False], [False, True]])
    out = loss(torch.tensor(s), torch.tensor(t), mask, progress=1.)
    expected = W * (_ce(s[0][0], t[0][0]) + _ce(s[1][1], t[1][1])) / 2
    assert out.item() == pytest.approx(expected, rel=1e-5)
    # Center: mean over all 4 tokens, masked or not.
    assert torch.allclose(loss.center, 0.1 * torch.tensor([[1., 1., 2.25]]))


def test_uncertain_loss_zero_when_nothing_masked():
    loss = _loss('FSRUncertainLoss')
    student = torch.randn(2, 4, 3, requires_grad=True)
    out = loss(
        student,
        torch.randn(2, 4, 3),
        torch.zeros(2, 4, dtype=torch.bool),
        progress=0.3)
    assert out.item() == 0. and torch.isfinite(out)
    out.backward()
    assert torch.equal(student.grad, torch.zeros(2, 4, 3))


@pytest.mark.parametrize('type', ['FSRCertainLoss', 'FSRUncertainLoss'])
def test_gradients_reach_student_only(type):
    loss = _loss(type)
    shape = (2, 3) if type == 'FSRCertainLoss' else (2, 4, 3)
    student = torch.randn(*shape, requires_grad=True)
    teacher = torch.randn(*shape, requires_grad=True)
    args = () if type == 'FSRCertainLoss' else (torch.ones(2, 4).bool(), )
    loss(student, teacher, *args, progress=0.5).backward()
    assert student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_center_unchanged_when_no_token_rows():
    """The segmentor passes only masked tokens; none masked -> no update."""
    from mmseg_fsr.models.losses import FSRUncertainLoss
    loss = FSRUncertainLoss(out_channels=3).train()
    loss.center.fill_(0.5)
    empty = torch.zeros(1, 0, 3, requires_grad=True)
    value = loss(empty, empty.detach(), torch.ones(1, 0, dtype=torch.bool),
                 1.0)
    assert value.item() == 0
    assert torch.equal(loss.center, torch.full((1, 3), 0.5))
