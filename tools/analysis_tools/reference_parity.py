"""Compare mmseg-fsr with the FSR authors' code, component by component.

Each row builds one part both ways (the authors' modules imported from
``--reference-dir``, never copied; the project's from ``mmseg_fsr`` and the
paper config), copies the weights with an explicit key map, feeds both the
same seeded tensors and prints the largest difference. Every row either
agrees ("equal") or differs for a reason listed in the difference table of
``configs/fsr/README.md`` ("documented: <row of that table>"). The exit
status is 1 when a row differs and the table does not list it.

Sizes are small (ViT width 96, 4 layers, 128 px, CPU): the comparison is
about the computation, not the scale.

Beyond the training step, two groups of rows run the authors' scripts' own
functions: ``test_time`` (their ``infer_voc.py`` evaluation and CRF on
synthetic images of odd sizes against the paper config's ``--tta`` model,
pipeline and evaluator) and ``training_views`` (their ``MultiviewTransform``
and data set against ``WSSSMultiView`` and the config's training data set,
driven by one stream of random numbers, plus two-sample KS tests of the
drawn parameters). Their scripts need ``scikit-learn``, ``imageio``,
``joblib`` and ``tqdm``; their energy loss rloss' ``bilateralfilter`` on
``PYTHONPATH``.

``--cfg-options`` changes the paper config every row reads (e.g.
``tta_model.crf_cfg.bilateral_srgb=6``: the CRF row then fails);
``--checks`` runs some groups of rows only.

Example::

    PYTHONPATH=/path/to/rloss_bilateralfilter \\
    python tools/analysis_tools/reference_parity.py \\
        --reference-dir ../feature-self-reinforcement
"""
import math
import os.path as osp
import sys
import warnings
from dataclasses import dataclass
from functools import partial
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import DictAction

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from reference_code import (AuthorsLoop,  # noqa: E402
                            build_reference_network, cuda_calls_stay_on_cpu,
                            energy_loss_available, reference_arg_parser,
                            reference_energy_loss)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PAPER_CONFIG = osp.join(
    REPO, 'configs/fsr/fsr_vit-b16_4xb2-20k_voc12aug-448x448.py')
COCO_CONFIG = osp.join(
    REPO, 'configs/fsr/fsr_vit-b16_4xb2-80k_coco2014-448x448.py')
LITERAL_CONFIG = osp.join(
    REPO, 'configs/fsr/fsr_vit-b16_4xb2-20k_voc12aug-448x448_paper-literal.py')
TABLE = osp.join(REPO, 'configs/fsr/README.md')

TOL = 1e-5
DIM, DEPTH, HEADS, SIZE, NUM_CLASSES = 96, 4, 4, 128, 21
HIDDEN, BOTTLENECK, K = 64, 32, 128
MAX_ITERS = 20000
# --cfg-options, merged into the paper config wherever a row reads it
CFG_OPTIONS: Optional[dict] = None


@dataclass
class Row:
    """One comparison: ``value`` is a max abs difference or a count."""
    name: str
    value: float
    unit: str = ''
    documented: Optional[str] = None

    @property
    def equal(self) -> bool:
        return (not math.isnan(self.value)) and self.value <= (
            0 if self.unit else TOL)


ROWS: List[Row] = []


def add(name: str, value: float, unit: str = '',
        documented: Optional[str] = None) -> None:
    row = Row(name, float(value), unit, documented)
    ROWS.append(row)
    shown = f'{int(row.value)} {unit}' if unit else f'{row.value:.3g}'
    print(f'  {name}: {shown} -> '
          f'{"equal" if row.equal else "differs"}', flush=True)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    diff = (a.detach().double() - b.detach().double()).abs()
    if torch.isnan(diff).any():
        return float('nan')
    return diff.max().item() if diff.numel() else 0.0


def relative_diff(a: Dict[str, torch.Tensor],
                  b: Dict[str, torch.Tensor]) -> float:
    """Largest difference over matching keys, relative to each tensor."""
    return max(
        max_diff(a[k], b[k]) / max(a[k].abs().max().item(), 1e-12)
        for k in a)


# --------------------------------------------------------------------------
# building both sides
# --------------------------------------------------------------------------
def load_config(path: str = PAPER_CONFIG):
    """A config of this project; the paper config with ``--cfg-options``."""
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    if path == PAPER_CONFIG and CFG_OPTIONS:
        cfg.merge_from_dict(CFG_OPTIONS)
    return cfg


def project_config(path: str = PAPER_CONFIG, drop_path: float = 0.0):
    """A paper config with the model scaled to the comparison size."""
    cfg = load_config(path)
    model = cfg.model
    model.backbone.update(
        img_size=(SIZE, SIZE), embed_dims=DIM, num_layers=DEPTH,
        num_heads=HEADS, out_indices=(DEPTH - 3, DEPTH - 1),
        drop_path_rate=drop_path, init_cfg=None)
    model.cam_head.in_channels = DIM
    model.decode_head.in_channels = DIM
    model.aggregation_head.update(in_channels=DIM, num_heads=HEADS)
    model.aggregation_head.projector.update(
        in_channels=DIM, hidden_channels=HIDDEN,
        bottleneck_channels=BOTTLENECK, out_channels=K)
    model.uncertain_loss.out_channels = K
    model.certain_loss.out_channels = K
    return cfg


def build_project(cfg):
    from mmseg.registry import MODELS
    return MODELS.build(cfg.model)


def build_reference(R, drop_path: float = 0.0) -> nn.Module:
    return build_reference_network(
        R, SIZE, DIM, DEPTH, HEADS, K, HIDDEN, BOTTLENECK, NUM_CLASSES,
        drop_path)


def perturb(module: nn.Module, generator: torch.Generator) -> None:
    """Move every trainable weight off its initial value."""
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=generator) * 0.05)


def map_encoder_blocks(sd: Dict[str, torch.Tensor], src: str,
                       dst: str) -> Dict[str, torch.Tensor]:
    """Authors' class-attention blocks -> MCABlock keys."""
    out = {}
    i = 0
    while f'{src}{i}.norm1.weight' in sd:
        s, d = f'{src}{i}.', f'{dst}{i}.'
        for t in ('weight', 'bias'):
            out[f'{d}norm1.{t}'] = sd[f'{s}norm1.{t}']
            out[f'{d}norm2.{t}'] = sd[f'{s}norm2.{t}']
            out[f'{d}attn.in_proj_{t}'] = torch.cat(
                [sd[f'{s}attn.{n}.{t}'] for n in 'qkv'])
            out[f'{d}attn.out_proj.{t}'] = sd[f'{s}attn.proj.{t}']
            out[f'{d}ffn.layers.0.0.{t}'] = sd[f'{s}mlp.fc1.{t}']
            out[f'{d}ffn.layers.1.{t}'] = sd[f'{s}mlp.fc2.{t}']
        i += 1
    return out


def map_reference(sd: Dict[str, torch.Tensor],
                  prefix: str = '') -> Dict[str, torch.Tensor]:
    """Authors' ``WSSSNetwork`` tensors -> ``FSRSegmentor`` keys.

    Works on a state dict or on a dict of gradients with the same names.
    """
    from mmseg_fsr.utils.vit_checkpoint import convert_timm_vit
    encoder = {k[len('encoder.'):]: v for k, v in sd.items()
               if k.startswith('encoder.')}
    vit = {k: v for k, v in encoder.items()
           if not k.startswith(('cls_blocks.', 'mask_token'))}
    out = {f'{prefix}backbone.{k}': v
           for k, v in convert_timm_vit(vit).items()}
    if 'mask_token' in encoder:
        out[f'{prefix}backbone.mask_token'] = encoder['mask_token'][None]
    out.update(map_encoder_blocks(encoder, 'cls_blocks.',
                                  f'{prefix}aggregation_head.blocks.'))
    proj = f'{prefix}aggregation_head.projector.'
    for i in (0, 2, 4):
        for t in ('weight', 'bias'):
            key = f'projector.mlp.{i}.{t}'
            if key in sd:
                out[f'{proj}mlp.{i}.{t}'] = sd[key]
    for ref_key, ours in (('weight_g', 'original0'),
                          ('weight_v', 'original1')):
        if f'projector.last_layer.{ref_key}' in sd:
            out[f'{proj}last_layer.parametrizations.weight.{ours}'] = sd[
                f'projector.last_layer.{ref_key}']
    for ref_key, ours in (('decoder.conv6', 'decode_head.convs.0.conv'),
                          ('decoder.conv7', 'decode_head.convs.1.conv'),
                          ('decoder.conv8', 'decode_head.conv_seg'),
                          ('top_classifier', 'cam_head.classifier'),
                          ('aux_classifier', 'cam_head.aux_classifier')):
        if f'{ref_key}.weight' in sd:
            out[f'{prefix}{ours}.weight'] = sd[f'{ref_key}.weight']
    return out


def paired_models(R, drop_path: float = 0.0, path: str = PAPER_CONFIG):
    """Authors' student + teacher and the project model, same weights."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    student, teacher = build_reference(R, drop_path), build_reference(
        R, drop_path)
    perturb(student, g)
    perturb(teacher, g)
    for p in teacher.parameters():
        p.requires_grad = False
    ours = build_project(project_config(path, drop_path))
    sd = map_reference(student.state_dict())
    # the project's teacher holds the parts the FSR targets read
    sd.update({
        k: v for k, v in map_reference(teacher.state_dict(),
                                       'teacher.').items()
        if k.startswith(('teacher.backbone.', 'teacher.aggregation_head.'))
    })
    result = ours.load_state_dict(sd, strict=False)
    left = unmapped_keys(result.missing_keys)
    if left or result.unexpected_keys:
        raise RuntimeError(f'key map incomplete: missing {left}, unexpected '
                           f'{result.unexpected_keys}')
    return student, teacher, ours


def unmapped_keys(missing_keys: List[str]) -> List[str]:
    """Missing keys other than the project's own state, which the authors'
    network has no tensor for: the FSR losses' centres (theirs live in the
    loss) and the teacher's record of the last step folded in."""
    return [k for k in missing_keys
            if not k.endswith('.center') and k != 'teacher.last_step']


def images(g: torch.Generator, batch: int = 2, size: int = SIZE):
    """ImageNet-normalised 8-bit-like RGB images, (B, 3, S, S)."""
    low = torch.rand(batch, 3, 12, 12, generator=g)
    img = F.interpolate(low, size=(size, size), mode='bilinear',
                        align_corners=False) * 0.8 + 0.2 * torch.rand(
                            batch, 3, size, size, generator=g)
    img = (img.clamp(0, 1) * 255).round() / 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (img - mean) / std


def multi_hot(classes: List[List[int]],
              num_classes: int = NUM_CLASSES - 1) -> torch.Tensor:
    labels = torch.zeros(len(classes), num_classes)
    for i, present in enumerate(classes):
        labels[i, present] = 1
    return labels


# --------------------------------------------------------------------------
# rows
# --------------------------------------------------------------------------
def check_pseudo_labels(R) -> None:
    from mmseg_fsr.models.pseudo_labellers import to_8bit_rgb
    from mmseg_fsr.models.utils import (PixelAdaptiveRefiner, cams_to_labels,
                                        cams_to_pseudo_labels,
                                        min_max_normalize)
    print('pseudo labels')
    g = torch.Generator().manual_seed(1)
    labels = multi_hot([[3, 7], [0, 11, 19]])
    cams = torch.rand(2, 20, 32, 32, generator=g)
    cams.view(-1)[::97] = 0.7  # values on the thresholds
    cams.view(-1)[1::89] = 0.25
    cams.view(-1)[2::83] = 0.5
    ref = R.camutils.cam_to_label(cams, labels.long(), ignore_mid=True,
                                  high_thre=0.7, low_thre=0.25,
                                  ignore_index=255)[1]
    ours = cams_to_pseudo_labels(cams, labels, 0.7, 0.25, 255)
    add('CAM -> pseudo labels (0.7 / 0.25 / ignore)', (ref != ours).sum(),
        'px')
    ref = R.camutils.cam_to_label(cams, labels.long(), bkg_thre=0.5,
                                  ignore_index=255)[1]
    add('CAM -> evaluation labels (background 0.5)',
        (ref != cams_to_labels(cams, labels, 0.5)).sum(), 'px')

    img = (images(g, 2, 64) * 0.2 + 0.5).clamp(0, 1)
    scores = torch.randn(2, 4, 32, 32, generator=g).softmax(1)
    par_r = R.par.PAR(num_iter=10, dilations=[1, 2, 4, 8, 12, 24])
    par_p = PixelAdaptiveRefiner(dilations=(1, 2, 4, 8, 12, 24), num_iter=10)
    add('PAR propagation', max_diff(par_r(img, scores), par_p(img, scores)))

    cfg = project_config()
    seg = build_project(cfg)
    x = images(g, 2, SIZE)
    cams = min_max_normalize(F.interpolate(
        torch.rand(2, 20, 8, 8, generator=g), size=(SIZE, SIZE),
        mode='bilinear', align_corners=False))
    valid = R.camutils.cam_to_label(cams, labels.long(), ignore_mid=True,
                                    high_thre=0.7, low_thre=0.25,
                                    ignore_index=255)[0]
    ref = R.camutils.refine_cams_with_bkg_v2(
        par_r, R.imutils.denormalize_img2(x.clone()), cams=valid,
        cls_labels=labels.long(), high_thre=0.7, low_thre=0.25,
        ignore_index=255)
    ours = seg.pseudo_labeller.pseudo_labels(
        to_8bit_rgb(x, *seg.data_preprocessor.mean_std()), cams, labels)
    add('PAR pseudo labels from the normalised input (8-bit de-normalised)',
        (ref.long() != ours).sum(), 'px')


def check_masking(R) -> None:
    from mmseg.registry import MODELS
    from mmseg_fsr.models.utils import min_max_normalize
    print('token masking')
    g = torch.Generator().manual_seed(3)
    labels = multi_hot([[3, 7], [0, 11, 19]])
    cams = min_max_normalize(F.interpolate(
        torch.rand(2, 20, 14, 14, generator=g), size=(448, 448),
        mode='bilinear', align_corners=False))
    noise = torch.rand(2, 49, generator=g)
    gen = R.masking.MaskGenerator(input_size=448, patch_size=16,
                                  block_size=64, mask_ratio=0.4,
                                  mode='nearest')

    def ref_mask(strategy):
        rand = R.masking.torch.rand
        R.masking.torch.rand = lambda *a, **k: noise.clone()
        try:
            return gen(cams, labels, 0.2, 0.7, strategy).flatten(1)
        finally:
            R.masking.torch.rand = rand

    for path, documented in ((PAPER_CONFIG, None),
                             (LITERAL_CONFIG, 'Token masking')):
        neck_cfg = load_config(path).model.mask_neck
        neck = MODELS.build(neck_cfg)
        tag = 'paper-literal config' if documented else 'paper config'
        num_blocks = (28 // neck.patches_per_block)**2
        ours = neck(cams, labels, (28, 28),
                    noise=noise if num_blocks == 49 else torch.rand(
                        2, num_blocks, generator=g))
        add(f'token mask, same CAM and noise ({tag})',
            (ref_mask('uncertain') != ours).sum(), 'tokens', documented)
        if documented:
            continue
        add('token mask, random phase, same noise',
            (ref_mask('random') != neck(None, labels, (28, 28),
                                        noise=noise)).sum(), 'tokens')
        switch = sum(((n + 1) <= MAX_ITERS // 5) == neck.uses_cam(
            n, MAX_ITERS) for n in range(MAX_ITERS))
        add('random -> uncertain masking switch (20k iterations)', switch,
            'iters')


def check_encoder(R) -> None:
    from mmseg_fsr.utils.vit_checkpoint import convert_vit_checkpoint
    print('encoder')
    g = torch.Generator().manual_seed(4)
    student, _, seg = paired_models(R)
    student.eval()
    seg.eval()
    multi_scale_cams = partial(seg.pseudo_labeller.multi_scale_cams,
                               seg.backbone, seg.cam_head)

    def certain_token(tokens, mask):
        return seg.aggregation_head.aggregate_and_project(
            tokens, seg.backbone.cls_token[:, 0], mask,
            seg.backbone.normalize_tokens)

    # The converter on the authors' encoder, as on a timm checkpoint.
    vit = {k: v for k, v in student.encoder.state_dict().items()
           if not k.startswith(('cls_blocks.', 'mask_token'))}
    converted = convert_vit_checkpoint(vit, 'timm', SIZE, 16)
    backbone = build_project(project_config()).backbone
    missing = backbone.load_state_dict(converted, strict=False).missing_keys
    backbone.mask_token.data.copy_(seg.backbone.mask_token)
    backbone.eval()
    add('converter: keys left out of a converted checkpoint (mask_token '
        'expected)', len([k for k in missing if k != 'mask_token']), 'keys')
    x = images(g)
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask.view(2, -1)[:, torch.randperm(64, generator=g)[:25]] = True
    with torch.no_grad():
        for name, m in (('unmasked', None), ('masked', mask)):
            top, aux = student.encoder(x, mask=m)
            outs = backbone(x, None if m is None else m.flatten(1))
            add(f'encoder with converted weights, {name}: final + aux maps',
                max(max_diff(student.to_2D(top[:, 1:], 8, 8), outs[-1]),
                    max_diff(student.to_2D(aux, 8, 8), outs[0])))
        out = student(x)
        feats = seg.backbone(x)
        logits = seg.cam_head(feats[-1], feats[0])
        add('classification logits, final + aux',
            max(max_diff(out['top_cls_out'], logits[0]),
                max_diff(out['aux_cls_out'], logits[1])))
        logits = seg.decode_head(feats)
        add('decoder logits (relative to their largest value)',
            max_diff(out['seg_out'], logits) / logits.abs().max().item())
        cams = student(x, cam_only=True)
        ours = seg.cam_head.cams(feats[-1], feats[0])
        add('token-resolution CAMs ReLU(Z W^T)',
            max(max_diff(cams[0], ours[0]), max_diff(cams[1], ours[1])))
        ms_r = R.camutils.multi_scale_cam(student, x, scales=(1.0, 0.5, 1.5))
        ms_p = multi_scale_cams(x)
        add('multi-scale CAMs (1.0, 0.5, 1.5 + flip), final + aux',
            max(max_diff(ms_r[0], ms_p[0]), max_diff(ms_r[1], ms_p[1])))
        x2 = images(g)
        ms2_r = R.camutils.multi_scale_cam(student, x2,
                                           scales=(1.0, 0.5, 1.5))
        cams, aux = multi_scale_cams(torch.cat([x, x2]), 2)
        add('batched CAM pass (view 1 final + aux, view 2 aux only)',
            max(max_diff(ms_r[0], cams), max_diff(ms_r[1], aux[:2]),
                max_diff(ms2_r[1], aux[2:])))
        # aggregation + projector, masked view
        enc, _ = student.encoder(x, mask=mask)
        ref_out = student.projector(enc)
        outs, tokens = seg.backbone.forward_with_tokens(x, mask.flatten(1))
        certain = certain_token(tokens, mask.flatten(1))
        add('aggregated class token, projected (masked view)',
            max_diff(ref_out[:, 0], certain))
        patches = seg.aggregation_head.project(
            outs[-1].flatten(2).transpose(1, 2))
        add('patch tokens, projected (masked view)',
            max_diff(ref_out[:, 1:], patches))
        seg.aggregation_head.mask_attention = True
        certain = certain_token(tokens, mask.flatten(1))
        seg.aggregation_head.mask_attention = False
        add('aggregated token with masked tokens out of the softmax '
            '(mask_attention=True)', max_diff(ref_out[:, 0], certain),
            documented='Masked tokens in the aggregation softmax')


def training_setup(R) -> tuple:
    """Paired networks in train mode, the authors' loop over theirs, and
    two images' labels as both sides take them."""
    from mmseg.structures import SegDataSample
    student, teacher, seg = paired_models(R)
    student.train()
    seg.train()
    loop = AuthorsLoop(R, student, teacher, SIZE, MAX_ITERS, K)
    labels = multi_hot([[3, 7], [0, 11, 19]])
    samples = []
    for i in range(2):
        sample = SegDataSample(metainfo=dict(img_path=f'image_{i}'))
        sample.gt_class_labels = labels[i]
        samples.append(sample)
    return student, teacher, seg, loop, labels, samples


def check_training_step(R) -> None:
    print('training step')
    student, teacher, seg, loop, labels, samples = training_setup(R)
    g = torch.Generator().manual_seed(5)
    n_iter = 5000
    seg.set_training_progress(n_iter, MAX_ITERS)
    weights = dict(cls=1.0, seg=0.1, aff=0.2, fsr_c=0.1, fsr_u=0.1, reg=1.0)
    keys = dict(cls=('loss_cls', 'loss_cls_aux'), seg=('decode.loss_seg', ),
                aff=('loss_aff', ), fsr_c=('loss_fsr_c', ),
                fsr_u=('loss_fsr_u', ), reg=('loss_reg', ))
    if not energy_loss_available(R):
        print("     the authors' bilateral-filter extension is not built: "
              'the dense energy loss is left out of the step on both sides')
        for table in (weights, keys):
            table.pop('reg')
    for step in (1, 2):
        views = [images(g), images(g)]
        noise = torch.rand(2, 4, generator=g)
        ref, mask2 = loop.losses(views, labels, n_iter, noise)
        neck_forward = seg.mask_neck.forward
        seg.mask_neck.forward = partial(neck_forward, noise=noise)
        ours = seg.loss(torch.stack(views, 1), samples)
        seg.mask_neck.forward = neck_forward
        for term, names in keys.items():
            value = sum(ours[n] for n in names) / weights[term]
            diff = max_diff(ref[term], value)
            if term == 'reg':  # a 1e-10-sized loss: compare relatively
                diff /= ref[term].abs().item()
            add(f'step {step}: {term} loss', diff)
        if step == 1:
            sum(w * ref[t] for t, w in weights.items()).backward()
            sum(ours[n] for names in keys.values() for n in names).backward()
            ref_grads = map_reference({
                n: p.grad for n, p in student.named_parameters()
                if p.grad is not None})
            our_grads = dict(seg.named_parameters())
            add('step 1: gradients of every trained tensor (relative)',
                relative_diff(ref_grads,
                              {k: our_grads[k].grad for k in ref_grads}))
    add('centres after two steps (class, patch)',
        max(max_diff(loop.fsr_loss.class_center, seg.certain_loss.center),
            max_diff(loop.fsr_loss.patch_center.view(1, -1),
                     seg.uncertain_loss.center)))


def check_idle_decoder(R) -> None:
    """Before the decoder's start their loop weights its loss by 0.0: the
    decoder's tensors get zero gradients, so AdamW still steps them."""
    print('before the decoder starts')
    student, teacher, seg, loop, labels, samples = training_setup(R)
    g = torch.Generator().manual_seed(9)
    n_iter = 100  # the decoder starts at 2,000
    seg.set_training_progress(n_iter, MAX_ITERS)
    views = [images(g), images(g)]
    noise = torch.rand(2, 4, generator=g)
    ref, _ = loop.losses(views, labels, n_iter, noise)
    weights = dict(cls=1.0, seg=0.0, aff=0.2, fsr_c=0.1, fsr_u=0.1, reg=0.0)
    sum(weights[t] * v for t, v in ref.items()).backward()
    neck_forward = seg.mask_neck.forward
    seg.mask_neck.forward = partial(neck_forward, noise=noise)
    losses = seg.loss(torch.stack(views, 1), samples)
    seg.mask_neck.forward = neck_forward
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    expected = map_reference({
        n: torch.full(p.shape, float(p.grad is not None))
        for n, p in student.named_parameters() if p.requires_grad
    })
    params = dict(seg.named_parameters())
    differ = [k for k, v in expected.items()
              if not torch.all(v == float(params[k].grad is not None))]
    if differ:
        print('     differ:', differ)
    add('tensors with a gradient (zeros included) before the decoder starts',
        len(differ), 'tensors')


def check_losses(R) -> None:
    from mmseg.registry import MODELS

    from mmseg_fsr.models.losses import PatchTokenContrastLoss
    print('losses')
    g = torch.Generator().manual_seed(7)
    fmap = torch.randn(2, 96, 8, 8, generator=g)
    tokens = torch.tensor([0, 3, 7, 255])[torch.randint(
        0, 4, (2, 8, 8), generator=g)]
    ref = R.seg_losses.get_masked_ptc_loss(
        fmap, R.camutils.label_to_aff_mask(tokens))
    add('patch token contrast loss', max_diff(
        ref, PatchTokenContrastLoss(loss_weight=1.0)(fmap, tokens)))
    pred = torch.randn(2, 21, 32, 32, generator=g)
    label = torch.tensor([0, 0, 4, 9, 255])[torch.randint(
        0, 5, (2, 32, 32), generator=g)]
    # the paper config's decoder loss, at weight 1
    loss = MODELS.build(dict(load_config().model.decode_head.loss_decode,
                             loss_weight=1.0))
    add('segmentation loss (background / foreground halves)',
        max_diff(R.seg_losses.get_seg_loss(pred, label, 255),
                 loss(pred, label, ignore_index=255)))
    label[label != 255] = 0
    add('segmentation loss, no foreground pixel',
        max_diff(R.seg_losses.get_seg_loss(pred, label, 255),
                 loss(pred, label, ignore_index=255)),
        documented='No foreground pixel in a batch')
    # their NaN value back-propagates the background half at weight 0.5
    grads = []
    for fn in (lambda x: R.seg_losses.get_seg_loss(x, label, 255),
               lambda x: loss(x, label, ignore_index=255)):
        x = pred.clone().requires_grad_()
        fn(x).backward()
        grads.append(x.grad)
    add('segmentation loss gradient, no foreground pixel', max_diff(*grads))


def check_energy_loss(R) -> None:
    """The dense energy loss alone: value and gradient w.r.t. the logits."""
    from mmseg.registry import MODELS
    print('dense energy loss')
    if not energy_loss_available(R):
        print("     skipped: the authors' bilateral-filter extension (rloss "
              "'bilateralfilter') is not importable")
        return
    g = torch.Generator().manual_seed(8)
    x = images(g, 2, 64)
    logits = F.interpolate(torch.randn(2, 21, 8, 8, generator=g) * 3,
                           size=(64, 64), mode='bilinear',
                           align_corners=False)
    labels = logits.argmax(1)
    labels[torch.rand(labels.shape, generator=g) < 0.3] = 255
    ref_logits = logits.clone().requires_grad_()
    our_logits = logits.clone().requires_grad_()
    ref = reference_energy_loss(R, x, ref_logits, labels.float())
    cfg = load_config(PAPER_CONFIG).model
    loss = MODELS.build(cfg.energy_loss)
    ours = loss(x, our_logits, labels, cfg.data_preprocessor.mean,
                cfg.data_preprocessor.std)
    ref.backward()
    ours.backward()
    add('dense energy loss value (relative)',
        abs(ref.item() - ours.item()) / abs(ref.item()))
    add('dense energy loss gradient w.r.t. the logits (relative)',
        max_diff(ref_logits.grad, our_logits.grad) /
        ref_logits.grad.abs().max().item())


def check_schedules(R) -> None:
    from mmseg_fsr.models.losses import FSRCertainLoss
    from mmseg_fsr.models.utils import EMATeacher
    print('schedules')
    cfg = load_config(PAPER_CONFIG)
    teacher = EMATeacher(dict(), **cfg.model.teacher_cfg)
    ref = R.pyutils.cosine_scheduler(0.9995, 1.0, MAX_ITERS)
    ours = np.array([teacher.momentum_at(i, MAX_ITERS)
                     for i in range(MAX_ITERS)])
    add('teacher momentum, every iteration', np.abs(ref - ours).max())
    loss_cfg = dict(cfg.model.certain_loss, out_channels=8)
    loss_cfg.pop('type')
    loss = FSRCertainLoss(**loss_cfg)
    ref = R.fsr_loss.FSRLoss(out_dim=8, warmup_epochs=MAX_ITERS // 8,
                             epochs=MAX_ITERS).teacher_temp
    ours = np.array([loss.teacher_temperature(i, MAX_ITERS)
                     for i in range(MAX_ITERS)])
    add('teacher temperature, every iteration', np.abs(ref - ours).max())

    # EMA update rule on the mapped models
    student, teacher, seg = paired_models(R)
    with torch.no_grad():
        for p_s, p_t in zip(student.parameters(), teacher.parameters()):
            p_t.data.mul_(0.9).add_(0.1 * p_s.detach().data)
    seg.update_teacher(0.9)
    expected = {
        k: v for k, v in map_reference(teacher.state_dict(),
                                       'teacher.').items()
        if k.startswith(('teacher.backbone.', 'teacher.aggregation_head.'))
    }
    ours = seg.state_dict()
    add('EMA teacher update (momentum 0.9)',
        max(max_diff(v, ours[k]) for k, v in expected.items()))

    # learning rates and weight decay of every trained tensor: each tensor
    # carries the code 2 * lr_multiplier + decay through the key map
    from mmengine.optim import build_optim_wrapper
    codes = {}
    for i, group in enumerate(student.get_param_groups()):
        for p in group:
            codes[id(p)] = 2 * (10.0 if i >= 2 else 1.0) + i % 2
    expected = map_reference({
        n: torch.full(p.shape, codes[id(p)])
        for n, p in student.named_parameters() if p.requires_grad
    })
    optimizer = build_optim_wrapper(seg, cfg.optim_wrapper).optimizer
    base_lr = cfg.optim_wrapper.optimizer.lr
    ours = {}
    for group in optimizer.param_groups:
        for p in group['params']:
            ours[id(p)] = 2 * group['lr'] / base_lr + (
                group['weight_decay'] > 0)
    params = dict(seg.named_parameters())
    mismatches = [
        k for k, v in expected.items()
        if not torch.all(v == ours.get(id(params[k]), -1))
    ]
    if mismatches:
        print('     differ:', mismatches)
    add('lr multiplier and weight decay of every trained tensor',
        len(mismatches), 'tensors')

    from mmengine.registry import PARAM_SCHEDULERS
    from mmseg_fsr.engine.runner import resolve_iteration_fractions
    p = nn.Parameter(torch.zeros(1))
    opt_r = R.optim.CosWarmupAdamW(
        params=[{'params': [p], 'lr': 1.0}], lr=1.0, weight_decay=0.0,
        betas=(0.9, 0.999), max_iters=MAX_ITERS, warmup_iters=1500,
        warmup_ratio=0.1)
    opt_p = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheds = [  # as WSSSRunner builds them: fractions of the run resolved
        PARAM_SCHEDULERS.build(dict(s, optimizer=opt_p))
        for s in resolve_iteration_fractions(cfg).param_scheduler
    ]
    gap = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # scheduler before optimizer step
        for _ in range(MAX_ITERS):
            opt_r.step()  # sets this iteration's lr (no gradient: no-op)
            gap = max(gap, abs(opt_r.param_groups[0]['lr'] -
                               opt_p.param_groups[0]['lr']))
            for s in scheds:
                s.step()
    add('learning-rate factor, every iteration', gap)


def check_recipe(ref_dir: str, R) -> None:
    from reference_code import reference_defaults, reference_energy_settings

    from mmseg_fsr.engine.runner import resolve_iteration_fractions
    from mmseg_fsr.models.utils import iteration_of
    print('recipe')
    for script, path in (('train_voc.py', PAPER_CONFIG),
                         ('train_coco.py', COCO_CONFIG)):
        a = reference_defaults(ref_dir, script)
        # as WSSSRunner and the model read them: fractions of the run
        cfg = resolve_iteration_fractions(load_config(path))
        m = cfg.model
        neck, plc = m.mask_neck, m.pseudo_labeller
        starts = {k: iteration_of(v, cfg.train_cfg.max_iters)
                  for k, v in m.loss_start_iters.items()}
        pairs = {
            'iterations': (a['max_iters'], cfg.train_cfg.max_iters),
            'lr': (a['lr'], cfg.optim_wrapper.optimizer.lr),
            'weight decay': (a['weight_decay'],
                             cfg.optim_wrapper.optimizer.weight_decay),
            'betas': (tuple(a['betas']),
                      tuple(cfg.optim_wrapper.optimizer.betas)),
            'warm-up': ((a['warmup_iters'], a['warmup_ratio']),
                        (cfg.param_scheduler[0].end,  # LinearWarmupLR
                         cfg.param_scheduler[0].start_factor)),
            'batch per GPU': (a['spg'], cfg.train_dataloader.batch_size),
            'crop': (a['input_size'], cfg.crop_size),
            'classes': (a['num_classes'], m.decode_head.num_classes),
            'thresholds': ((a['high_thre'], a['low_thre'], a['bkg_thre']),
                           (plc.high_thr, plc.low_thr, plc.eval_bg_thr)),
            'CAM scales': (tuple(a['cam_scales']), tuple(plc.cam_scales)),
            'loss weights aff / seg / L_c / L_u':
            ((a['w_aff'], a['w_seg'], a['w_class'], a['w_patch']),
             (m.affinity_loss.loss_weight, m.decode_head.loss_decode.
              loss_weight, m.certain_loss.loss_weight,
              m.uncertain_loss.loss_weight)),
            'teacher momentum': (a['momentum'],
                                 m.teacher_cfg.momentum),
            'loss starts (seg, aff)': (loss_starts(ref_dir, script),
                                       (starts['seg'], starts['aff'])),
            'masking (block, ratio)': ((a['block_size'], a['mask_ratio']),
                                       (neck.block_size, neck.mask_ratio)),
            'drop path': (a['drop_path_rate'],
                          m.backbone.drop_path_rate),
            'aggregation blocks': (a['cls_depth'],
                                   m.aggregation_head.num_blocks),
            'projector outputs': (a['out_dim'],
                                  m.aggregation_head.projector.out_channels),
            'energy loss (w_reg, weight, sigma_rgb, sigma_xy, scale)':
            ((a['w_reg'], ) + reference_energy_settings(ref_dir, script),
             (m.energy_loss.loss_weight, m.energy_loss.energy_weight,
              m.energy_loss.sigma_rgb, m.energy_loss.sigma_xy,
              m.energy_loss.scale_factor)),
        }
        bad = [k for k, (r, o) in pairs.items() if not np.allclose(r, o)]
        if bad:
            print('     differ:', {k: pairs[k] for k in bad})
        add(f'{script} defaults vs {osp.basename(path)}', len(bad),
            'settings')
    mean = np.array(R.transforms.MEAN) * 255
    std = np.array(R.transforms.STD) * 255
    pre = load_config(PAPER_CONFIG).model.data_preprocessor
    add('input normalisation (mean, std)',
        float(max(np.abs(mean - pre.mean).max(), np.abs(std - pre.std).max())))
    view = R.transforms.MultiviewTransform().transform1_view1.transforms
    from mmseg.registry import TRANSFORMS
    ours = TRANSFORMS.build(multi_view_step(
        load_config(PAPER_CONFIG))).pipelines[0].transforms
    crop, flip, jitter = ours[0], ours[1], ours[2]
    ref_settings = (view[0].size[0], tuple(view[0].scale),
                    tuple(round(r, 4) for r in view[0].ratio),
                    view[0].interpolation.value, view[1].p, view[2].p,
                    view[2].transforms[0].brightness,
                    view[2].transforms[0].contrast,
                    view[2].transforms[0].saturation,
                    view[2].transforms[0].hue)
    tv_jitter = jitter.transforms.transforms[1].t
    our_settings = (crop.scale[0], tuple(crop.crop_ratio_range),
                    tuple(round(r, 4) for r in crop.aspect_ratio_range),
                    crop.interpolation, flip.prob, jitter.prob,
                    tv_jitter.brightness, tv_jitter.contrast,
                    tv_jitter.saturation, tv_jitter.hue)
    diff = [i for i, (r, o) in enumerate(zip(ref_settings, our_settings))
            if r != o]
    if diff:
        print('     differ:', ref_settings, our_settings)
    add('view augmentation (crop, scale, ratio, interpolation, flip, '
        'jitter)', len(diff), 'settings')


def check_stochastic_targets(R) -> None:
    print('train-mode targets')
    student, teacher, seg = paired_models(R, drop_path=0.5)
    student.train()
    teacher.train()
    seg.train()
    g = torch.Generator().manual_seed(9)
    x = images(g)
    with torch.no_grad():
        ref = [R.camutils.multi_scale_cam(student, x, (1.0, ))[0]
               for _ in range(2)] + [teacher(x)['project_out']
                                     for _ in range(2)]
        ours = [seg.pseudo_labeller.multi_scale_cams(
            seg.backbone, seg.cam_head, x)[0] for _ in range(2)]
        backbone = seg.teacher['backbone']
        ours += [backbone.forward_with_tokens(x)[0][-1] for _ in range(2)]
    ref_flags = (max_diff(ref[0], ref[1]) > 0, max_diff(ref[2], ref[3]) > 0)
    our_flags = (max_diff(ours[0], ours[1]) > 0,
                 max_diff(ours[2], ours[3]) > 0)
    add('drop path acts on the CAM pass and the teacher (train mode)',
        sum(r != o for r, o in zip(ref_flags, our_flags)), 'behaviours')


# --------------------------------------------------------------------------
# test time: the authors' infer_voc.py against the paper config's --tta
# --------------------------------------------------------------------------
# (height, width): sizes that are not whole patches, and one that is
TEST_SIZES = ((97, 131), (131, 97), (256, 320))
TEST_IMAGES_PER_SIZE = 2


def test_images(root: str) -> List[str]:
    """Synthetic VOC-layout val images of :data:`TEST_SIZES`, 2-3 classes.

    Masks are written as grayscale PNGs (the authors read them with
    imageio, which expands palette PNGs to RGB).
    """
    import os
    import shutil

    from PIL import Image

    from mmseg_fsr.testing import generate_synthetic_voc
    for sub in ('JPEGImages', 'SegmentationClass', 'SegmentationClassAug',
                'ImageSets/Segmentation'):
        os.makedirs(osp.join(root, sub), exist_ok=True)
    names = []
    for k, (h, w) in enumerate(TEST_SIZES):
        src = osp.join(root, 'sources', f'{h}x{w}')
        generate_synthetic_voc(src, num_train=0, num_val=12, img_size=(h, w),
                               seed=k)
        picked = 0
        for i in range(12):
            mask = np.asarray(Image.open(
                osp.join(src, 'SegmentationClass', f'val_{i:05d}.png')))
            if not 2 <= len(set(np.unique(mask)) - {255}) <= 3:
                continue
            name = f'{h}x{w}_{i:02d}'
            shutil.copy(osp.join(src, 'JPEGImages', f'val_{i:05d}.jpg'),
                        osp.join(root, 'JPEGImages', f'{name}.jpg'))
            for sub in ('SegmentationClass', 'SegmentationClassAug'):
                Image.fromarray(mask).save(osp.join(root, sub, f'{name}.png'))
            names.append(name)
            picked += 1
            if picked == TEST_IMAGES_PER_SIZE:
                break
    with open(osp.join(root, 'ImageSets/Segmentation/val.txt'), 'w') as f:
        f.write('\n'.join(names) + '\n')
    return names


def project_tta(cfg, seg: nn.Module, root: str) -> tuple:
    """``tools/test.py --tta`` of ``cfg`` on ``root``'s val split.

    As the tool sets it up (the test set through ``tta_pipeline``, the
    segmentor wrapped in ``tta_model``), one image per batch; the CRF runs
    in this process (``crf_workers=0``: the same CRF, no pool).

    Returns:
        tuple: The data set and the merged ``SegDataSample`` per image.
    """
    from mmengine.dataset import pseudo_collate
    from mmseg.registry import DATASETS, MODELS
    tta = MODELS.build(dict(cfg.tta_model, module=seg, crf_workers=0))
    dataset = DATASETS.build(dict(
        cfg.test_dataloader.dataset, data_root=root,
        ann_file='ImageSets/Segmentation/val.txt',
        pipeline=cfg.tta_pipeline))
    tta.eval()
    with torch.no_grad():
        merged = [tta.test_step(pseudo_collate([dataset[i]]))[0]
                  for i in range(len(dataset))]
    return dataset, merged


def iou_metric(metric_cfg: dict, dataset, samples: list,
               pred_key: str = 'pred_sem_seg') -> tuple:
    """A test evaluator metric on ``samples``: (per-image areas, metrics)."""
    from mmseg.registry import METRICS
    metric = METRICS.build(metric_cfg)
    metric.dataset_meta = dataset.metainfo
    metric.process({}, [s.to_dict() for s in samples])
    areas = [np.stack([a.numpy() for a in r]) for r in metric.results]
    return sum(areas), metric.compute_metrics(metric.results)


def confusion_areas(hist: np.ndarray) -> np.ndarray:
    """Intersection, union, prediction and label areas of a confusion
    matrix (rows: label, columns: prediction), as ``IoUMetric`` keeps them."""
    inter, label, pred = np.diag(hist), hist.sum(1), hist.sum(0)
    return np.stack([inter, label + pred - inter, pred, label])


def check_test_time(R) -> None:
    import tempfile

    from PIL import Image
    from reference_code import (import_reference_module,
                                reference_call_kwargs, time_authors_inference)

    from mmseg_fsr.models.utils.dense_crf import crf_from_image_file
    print('test time (--tta against infer_voc.py)')
    evaluate = import_reference_module(R.ref_dir, 'utils.evaluate')
    dcrf = import_reference_module(R.ref_dir, 'utils.dcrf')
    student, _, seg = paired_models(R)
    student.eval()
    seg.eval()
    cfg = project_config()
    work = tempfile.mkdtemp(prefix='fsr_parity_tta_')
    root = osp.join(work, 'voc')
    names = test_images(root)
    print(f'     {len(names)} images of sizes {TEST_SIZES}, 2-3 classes each')
    ref = time_authors_inference(R, student, root, names, osp.join(work, 'a'))
    dataset, merged = project_tta(cfg, seg, root)
    assert [osp.basename(s.img_path)[:-4] for s in merged] == names

    # (a) fused logits before the CRF, (b) labels after it
    theirs = [torch.from_numpy(np.load(
        osp.join(ref['logits_dir'], f'{n}.npy'),
        allow_pickle=True).item()['msc_seg'][0]) for n in names]
    scale = max(t.abs().max().item() for t in theirs)
    whole = [i for i, n in enumerate(names) if n.startswith('256x320')]
    add('test: fused multi-scale + flip logits before the CRF, relative '
        '(sizes of whole patches)',
        max(max_diff(theirs[i], merged[i].seg_logits.data)
            for i in whole) / scale, documented='Test-time resizing')
    add('test: fused multi-scale + flip logits before the CRF, relative '
        '(97x131, 131x97)',
        max(max_diff(t, s.seg_logits.data) for t, s in zip(theirs, merged))
        / scale, documented='Test-time resizing')
    their_crf = [np.asarray(Image.open(osp.join(ref['segs_dir'],
                                                f'{n}.png'))) for n in names]
    ours_crf = [s.pred_sem_seg.data[0].numpy() for s in merged]
    add('test: labels after the CRF, each side end to end',
        sum((a != b).sum() for a, b in zip(their_crf, ours_crf)), 'px',
        documented='Test-time resizing')
    crf = dcrf.DenseCRF(**reference_call_kwargs(R.ref_dir, 'infer_voc.py',
                                                'DenseCRF'))
    prob_gap, label_gap = 0.0, 0
    for name, logits in zip(names, theirs):
        img_path = osp.join(root, 'JPEGImages', f'{name}.jpg')
        image = np.array(Image.open(img_path).convert('RGB'))
        probs = logits.softmax(0).numpy()  # as their main_crf
        a = crf(image, probs)
        b = crf_from_image_file(img_path, probs, cfg.tta_model.crf_cfg)
        prob_gap = max(prob_gap, float(np.abs(a - b).max()))
        label_gap += int((a.argmax(0) != b.argmax(0)).sum())
    add('test: CRF probabilities, same image and input (their DenseCRF vs '
        'tta_model.crf_cfg)', prob_gap)
    add('test: CRF labels, same image and input', label_gap, 'px')

    # (c) CAM labels at native size, background 0.5, and their scores
    voc = import_reference_module(R.ref_dir, 'datasets.voc')
    gts, their_cams, resized_cams = [], [], []
    data = voc.VOC12SegDataset(root_dir=ref['data_root'],
                               name_list_dir=ref['list_dir'], split='val',
                               stage='val', aug=False)
    with torch.no_grad():
        for i in range(len(data)):
            _, image, label, cls_label = data[i]
            x = torch.from_numpy(image)[None]
            labels = torch.from_numpy(cls_label)[None].long()
            for inputs, out in ((x, their_cams), (F.interpolate(
                    x, size=[SIZE] * 2, mode='bilinear',
                    align_corners=False), resized_cams)):
                cam, _ = R.camutils.multi_scale_cam(student, inputs,
                                                    scales=(1.0, 0.5, 1.5))
                cam = F.interpolate(cam, size=label.shape, mode='bilinear',
                                    align_corners=False)
                out.append(R.camutils.cam_to_label(
                    cam, labels, ignore_mid=False, bkg_thre=0.5,
                    ignore_index=255)[1][0].numpy())
            gts.append(label.astype(int))
    ours_cam = [s.pred_cam_label.data[0].numpy() for s in merged]
    for tag, rows in (('sizes of whole patches', whole),
                      ('97x131, 131x97', [i for i in range(len(names))
                                          if i not in whole])):
        add(f'test: CAM labels at native size, background 0.5 ({tag})',
            sum((their_cams[i] != ours_cam[i]).sum() for i in rows), 'px',
            documented='Test-time resizing')
    add('test: CAM labels, their validation (images resized to the crop)',
        sum((a != b).sum() for a, b in zip(resized_cams, ours_cam)), 'px',
        documented='Validation during training')
    cam_metric = next(m for m in cfg.test_evaluator
                      if m.get('pred_key') == 'pred_cam_label')
    areas, metrics = iou_metric(cam_metric, dataset, merged)
    hist = sum(evaluate._fast_hist(g.flatten(), p.flatten().astype(int), 21)
               for g, p in zip(gts, ours_cam))
    add('test: CAM label confusion counts, their evaluate vs '
        'PseudoLabelMetric (same labels)',
        (confusion_areas(hist) != areas).sum(), 'entries')
    score = evaluate.scores(gts, ours_cam)['miou'] * 100
    add('test: CAM mIoU, their evaluate vs PseudoLabelMetric (same labels, '
        'beyond 2-decimal rounding)',
        max(0.0, abs(score - metrics['mIoU']) - 0.005),
        documented='mIoU over the classes of the ground truth')
    print(f'     CAM mIoU: theirs (their labels) '
          f'{evaluate.scores(gts, their_cams)["miou"] * 100:.2f}, theirs '
          f'(our labels) {score:.2f}, PseudoLabelMetric {metrics["mIoU"]}')

    # (d) confusion matrix and mIoU of the final labels
    seg_metric = next(m for m in cfg.test_evaluator
                      if m.type == 'IoUMetric')
    areas, metrics = iou_metric(seg_metric, dataset, merged)
    hist = sum(evaluate._fast_hist(g.flatten(), p.flatten().astype(int), 21)
               for g, p in zip(gts, ours_crf))
    add('test: confusion counts after the CRF, their evaluate vs IoUMetric '
        '(same labels)', (confusion_areas(hist) != areas).sum(), 'entries')
    score = evaluate.scores(gts, ours_crf)['miou'] * 100
    add('test: mIoU after the CRF, their evaluate vs IoUMetric (same labels, '
        'beyond 2-decimal rounding)',
        max(0.0, abs(score - metrics['mIoU']) - 0.005),
        documented='mIoU over the classes of the ground truth')
    add('test: mIoU after the CRF, each side end to end (points)',
        abs(ref['crf_score']['miou'] * 100 - metrics['mIoU']),
        documented='Test-time resizing')
    their_miou = ref['crf_score']['miou'] * 100
    print(f'     mIoU after the CRF: theirs {their_miou:.2f} (their labels), '
          f'{score:.2f} (our labels); IoUMetric {metrics["mIoU"]}')


# --------------------------------------------------------------------------
# training views: WSSSMultiView against their MultiviewTransform
# --------------------------------------------------------------------------
class SharedDraws:
    """One seeded stream of U(0, 1) numbers behind numpy's and torch's draws.

    Inside the context, the random functions the two view pipelines call
    (numpy's ``uniform``, ``randint``, ``rand``, ``choice``; torch's
    ``rand``, ``randint``, ``randperm``, ``Tensor.uniform_``) each take
    their next number from this stream and map it as the library does
    (``low + (high - low) * u``, ``floor``, a cumulative-probability
    search), so two pipelines that draw the same quantities in the same
    order see the same values, whichever library draws them.
    """

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def u(self) -> float:
        return float(self.rng.random())

    def __enter__(self):
        u = self.u

        def np_randint(low, high=None, size=None):
            low, high = (0, low) if high is None else (low, high)
            return low + int(u() * (high - low))

        def np_choice(a, p=None):
            index = int(np.searchsorted(np.cumsum(p), u(), side='right'))
            return a[index]

        def torch_randint(low, high, size, **kwargs):
            return torch.full(size, low + int(u() * (high - low)),
                              dtype=torch.long)

        def uniform_(tensor, a=0.0, b=1.0, **kwargs):
            return tensor.fill_(a + (b - a) * u())

        self.saved = [(np.random, name, getattr(np.random, name))
                      for name in ('uniform', 'randint', 'rand', 'choice')]
        self.saved += [(torch, name, getattr(torch, name))
                       for name in ('rand', 'randint', 'randperm')]
        self.saved.append((torch.Tensor, 'uniform_', torch.Tensor.uniform_))
        np.random.uniform = lambda low=0.0, high=1.0, size=None: (
            low + (high - low) * u())
        np.random.randint = np_randint
        np.random.rand = lambda: u()
        np.random.choice = np_choice
        torch.rand = lambda *size, **kwargs: torch.full(
            size[0] if isinstance(size[0], (tuple, list)) else size, u())
        torch.randint = torch_randint
        torch.randperm = lambda n, **kwargs: torch.from_numpy(
            np.argsort([u() for _ in range(n)]))
        torch.Tensor.uniform_ = uniform_
        return self

    def __exit__(self, *exc) -> None:
        for owner, name, value in self.saved:
            setattr(owner, name, value)


VIEW_DRAWS = 200  # image pairs compared pixel for pixel
KS_DRAWS = 10000  # draws per parameter in the distribution comparison


def their_views(R, image_rgb: np.ndarray, crop: int) -> List[np.ndarray]:
    """The authors' two views of an RGB image, de-normalised to 8 bits."""
    from PIL import Image
    views = R.transforms.MultiviewTransform(size1=crop)(
        Image.fromarray(image_rgb))
    mean = torch.tensor(R.transforms.MEAN).view(3, 1, 1)
    std = torch.tensor(R.transforms.STD).view(3, 1, 1)
    return [((v * std + mean) * 255).round().byte().permute(1, 2, 0).numpy()
            for v in views]


def multi_view_step(cfg) -> dict:
    """The ``WSSSMultiView`` step of the config's training pipeline."""
    return next(t for t in cfg.train_dataloader.dataset.pipeline
                if t.type == 'WSSSMultiView')


def check_training_views(R) -> None:
    import tempfile

    from mmseg.registry import DATASETS, TRANSFORMS
    from PIL import Image
    from reference_code import import_reference_module, write_name_lists
    from scipy.stats import ks_2samp
    print('training views (WSSSMultiView against MultiviewTransform)')
    cfg = load_config(PAPER_CONFIG)
    step = multi_view_step(cfg)
    ours = TRANSFORMS.build(step)
    crop = step.crop_size
    root = osp.join(tempfile.mkdtemp(prefix='fsr_parity_views_'), 'voc')
    names = test_images(root)
    image = np.asarray(Image.open(
        osp.join(root, 'JPEGImages', f'{names[0]}.jpg')).convert('RGB'))

    # the same draws on the same decoded image, pixel for pixel
    differ = 0
    for seed in range(VIEW_DRAWS):
        with SharedDraws(seed):
            ref = their_views(R, image, crop)
        with SharedDraws(seed):
            views = ours(dict(img=image[..., ::-1].copy(),
                              img_shape=image.shape[:2],
                              ori_shape=image.shape[:2]))['img']
        differ += sum(int((a != b[..., ::-1]).sum())
                      for a, b in zip(ref, views))
    add(f'views from the same draws, {VIEW_DRAWS} pairs of {image.shape[0]}'
        f'x{image.shape[1]} -> {crop} (crop, flip, jitter order and '
        'strengths, bicubic)', differ, 'values')

    # through both data sets: decoding, views and image-level labels
    list_dir = osp.join(root, 'lists')
    write_name_lists(root, names, list_dir, 'val')
    voc = import_reference_module(R.ref_dir, 'datasets.voc')
    theirs = voc.VOC12ClsDataset(
        root_dir=root, name_list_dir=list_dir, split='val',
        transform=R.transforms.MultiviewTransform(size1=crop))
    dataset = DATASETS.build(dict(
        cfg.train_dataloader.dataset, data_root=root,
        ann_file='ImageSets/Segmentation/val.txt'))
    mean = torch.tensor(R.transforms.MEAN).view(3, 1, 1)
    std = torch.tensor(R.transforms.STD).view(3, 1, 1)
    view_gap, label_gap = 0, 0
    for i, name in enumerate(names):
        with SharedDraws(i):
            _, ref, ref_label = theirs[i]
        with SharedDraws(i):
            packed = dataset[i]
        assert osp.basename(packed['data_samples'].img_path) == f'{name}.jpg'
        views = packed['inputs'].view(-1, 3, crop, crop).flip(1)  # to RGB
        view_gap += sum(
            int((((r * std + mean) * 255).round().byte() != v).sum())
            for r, v in zip(ref, views))
        label_gap += int((packed['data_samples'].gt_class_labels !=
                          ref_label).sum())
    add(f'training samples through both data sets ({len(names)} images): '
        'views', view_gap, 'values')
    add(f'training samples through both data sets ({len(names)} images): '
        'image-level labels', label_gap, 'labels')

    # draws that are not injected: distributions, two-sample KS
    crop_t, flip_t, jitter_t = ours.pipelines[0].transforms
    tv_jitter = jitter_t.transforms.transforms[1].t
    ref_crop, ref_flip, ref_jitter = R.transforms.MultiviewTransform(
        size1=crop).transform1_view1.transforms[:3]
    pil = Image.fromarray(image)
    np.random.seed(0)
    torch.manual_seed(0)
    draws = {
        'crop (top, left, height, width)': (
            np.array([crop_t.rand_crop_params(image)
                      for _ in range(KS_DRAWS)]),
            np.array([ref_crop.get_params(pil, ref_crop.scale, ref_crop.ratio)
                      for _ in range(KS_DRAWS)])),
        'flip': (np.array([[flip_t._choose_direction() is not None]
                           for _ in range(KS_DRAWS)]),
                 np.array([[bool(torch.rand(1) < ref_flip.p)]
                           for _ in range(KS_DRAWS)])),
        'jitter applied': (np.array([[jitter_t.random_apply()]
                                     for _ in range(KS_DRAWS)]),
                           np.array([[not ref_jitter.p < torch.rand(1)]
                                     for _ in range(KS_DRAWS)])),
        'jitter (brightness, contrast, saturation, hue)': tuple(
            np.array([j.get_params(j.brightness, j.contrast, j.saturation,
                                   j.hue)[1:] for _ in range(KS_DRAWS)])
            for j in (tv_jitter, ref_jitter.transforms[0])),
    }
    low = 0
    for name, (a, b) in draws.items():
        p = [ks_2samp(a[:, k].astype(float), b[:, k].astype(float)).pvalue
             for k in range(a.shape[1])]
        low += sum(v < 1e-3 for v in p)
        print(f'     {name}: KS p-values {", ".join(f"{v:.3g}" for v in p)} '
              f'({KS_DRAWS} draws each side)')
    add(f'view parameter distributions, {KS_DRAWS} draws each (KS p < 1e-3)',
        low, 'parameters')


def loss_starts(ref_dir: str, script: str) -> tuple:
    """First 0-based iteration of the seg and affinity losses in a script.

    The authors weight a loss by 0.0 while ``(n_iter + 1) <= N``: seg starts
    at the last such N, affinity at the one whose branch zeroes it.
    """
    import re
    with open(osp.join(ref_dir, script)) as f:
        source = f.read()
    starts = {'seg': 0, 'aff': 0}
    for bound, line in re.findall(
            r'\(n_iter \+ 1\) <= (\d+):\n\s*loss = (.*)', source):
        for term, pattern in (('seg', '0.0 * seg_loss'),
                              ('aff', '0.0 * aff_loss')):
            if pattern in line:
                starts[term] = max(starts[term], int(bound))
    return starts['seg'], starts['aff']


def documented_rows() -> List[str]:
    with open(TABLE) as f:
        return [line for line in f if line.startswith('|')]


CHECKS: Dict[str, Callable] = {
    'pseudo_labels': check_pseudo_labels,
    'masking': check_masking,
    'encoder': check_encoder,
    'training_step': check_training_step,
    'losses': check_losses,
    'idle_decoder': check_idle_decoder,
    'energy_loss': check_energy_loss,
    'schedules': check_schedules,
    'stochastic_targets': check_stochastic_targets,
    'recipe': lambda R: check_recipe(R.ref_dir, R),
    'test_time': check_test_time,
    'training_views': check_training_views,
}


def main(argv=None) -> int:
    parser = reference_arg_parser(__doc__)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument(
        '--checks', nargs='+', choices=list(CHECKS), default=list(CHECKS),
        help='groups of rows to run (default: all)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the paper config the rows read (e.g. to '
        'see a row fail): key=value pairs, as tools/train.py')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sys.path.insert(0, REPO)
    import mmseg_fsr  # noqa: F401  (before the authors' top-level names)
    from mmengine.registry import init_default_scope
    from reference_code import load_reference
    global CFG_OPTIONS
    CFG_OPTIONS = args.cfg_options
    ROWS.clear()
    init_default_scope('mmseg')
    warnings.filterwarnings('ignore')
    R = load_reference(args.reference_dir)
    with cuda_calls_stay_on_cpu():  # the authors' energy loss calls .cuda()
        for name in args.checks:
            CHECKS[name](R)
    table = documented_rows()
    width = max(len(r.name) for r in ROWS)
    print(f'\n{"component".ljust(width)} | difference | verdict')
    undocumented = 0
    for row in ROWS:
        shown = f'{int(row.value)} {row.unit}' if row.unit else \
            f'{row.value:.3g}'
        if row.equal:
            verdict = 'equal'
        elif row.documented and any(row.documented in t for t in table):
            verdict = f'documented: {row.documented}'
        else:
            verdict = 'DIFFERS, not in the README table'
            undocumented += 1
        print(f'{row.name.ljust(width)} | {shown} | {verdict}')
    equal = sum(r.equal for r in ROWS)
    documented = len(ROWS) - equal - undocumented
    print(f'\n{len(ROWS)} rows: {equal} equal, {documented} documented '
          f'differences, {undocumented} undocumented')
    return 1 if undocumented else 0


if __name__ == '__main__':
    sys.exit(main())
