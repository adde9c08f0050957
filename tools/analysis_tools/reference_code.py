"""Import the FSR authors' code from a local checkout, for side-by-side tools.

The authors' training code (github ``Jessie459/feature-self-reinforcement``)
has no licence, so nothing of it is part of this project: tools that compare
with it import it at run time from a folder the user gives (a plain checkout
of that repository). Its imports of timm and of rloss' compiled bilateral
filter are satisfied by small stand-ins when those packages are absent:
timm's ``DropPath`` / ``trunc_normal_`` / ``to_2tuple`` are re-implemented
here, and the bilateral filter raises if anything calls it.
"""
import importlib
import os.path as osp
import sys
import types
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Iterator, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

#: The authors' modules the tools use, by attribute name.
REFERENCE_MODULES = dict(
    vit='models.vit',
    network='models.network',
    projector='models.projector',
    decoder='models.decoder',
    par='models.PAR',
    seg_losses='models.losses',
    fsr_loss='losses',
    camutils='utils.camutils',
    imutils='utils.imutils',
    masking='utils.masking',
    optim='utils.optim',
    pyutils='utils.pyutils',
    transforms='transforms')


class _DropPath(nn.Module):
    """Per-sample stochastic depth (what timm's ``DropPath`` computes)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1 - self.drop_prob
        shape = (x.shape[0], ) + (1, ) * (x.dim() - 1)
        return x * x.new_empty(shape).bernoulli_(keep) / keep


def _missing_extension(*args, **kwargs):
    raise RuntimeError(
        "the authors' bilateral-filter extension (rloss' bilateralfilter) is "
        'not built; build it and put it on PYTHONPATH to run their dense '
        'energy loss')


def _missing_texttable(*args, **kwargs):
    raise ImportError("the authors' result tables need texttable: pip "
                      'install texttable')


def _install_stand_ins() -> None:
    """Minimal modules for imports the authors' code needs but we lack."""

    def module(name: str, **attrs) -> None:
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod

    try:
        importlib.import_module('timm')
    except ImportError:
        import torchvision.transforms as T  # noqa: F401 (transforms.py)
        module('timm')
        module('timm.data',
               IMAGENET_DEFAULT_MEAN=(0.485, 0.456, 0.406),
               IMAGENET_DEFAULT_STD=(0.229, 0.224, 0.225),
               create_transform=_missing_extension)
        module('timm.models')
        module('timm.models.layers',
               DropPath=_DropPath,
               to_2tuple=lambda x: tuple(x) if isinstance(
                   x, (tuple, list)) else (x, x),
               trunc_normal_=lambda t, std=1.0: nn.init.trunc_normal_(
                   t, std=std))
    try:
        importlib.import_module('bilateralfilter')
    except ImportError:
        module('bilateralfilter', bilateralfilter=_missing_extension,
               bilateralfilter_batch=_missing_extension)
    try:
        importlib.import_module('texttable')
    except ImportError:  # utils.pyutils formats log tables with it
        module('texttable', Texttable=_missing_texttable)


def load_reference(ref_dir: str) -> SimpleNamespace:
    """Import the authors' modules from ``ref_dir``.

    ``mmseg_fsr`` must be imported first: the authors' top-level package
    names (``models``, ``utils``, ``losses``, ``transforms``) then cannot
    shadow anything the project imports later.

    Args:
        ref_dir (str): A plain checkout of the authors' repository.

    Returns:
        SimpleNamespace: The modules of :data:`REFERENCE_MODULES`.

    Raises:
        FileNotFoundError: If ``ref_dir`` does not hold their code.
    """
    ref_dir = osp.abspath(ref_dir)
    if not osp.isfile(osp.join(ref_dir, 'train_voc.py')):
        raise FileNotFoundError(
            f"{ref_dir} does not hold the authors' FSR code (no "
            'train_voc.py): give a checkout of '
            'github.com/Jessie459/feature-self-reinforcement')
    _install_stand_ins()
    sys.path.insert(0, ref_dir)
    return SimpleNamespace(
        ref_dir=ref_dir,
        **{attr: import_reference_module(ref_dir, name)
           for attr, name in REFERENCE_MODULES.items()})


# import names of the authors' dependencies whose pip name differs
PIP_NAMES = {'sklearn': 'scikit-learn', 'cv2': 'opencv-python',
             'PIL': 'Pillow', 'skimage': 'scikit-image'}


def import_reference_module(ref_dir: str, name: str) -> types.ModuleType:
    """Import ``name`` from the authors' code (on ``sys.path``).

    Raises:
        ImportError: If ``name`` resolves outside ``ref_dir`` (e.g. to an
            installed package of the same name), or one of their
            dependencies is missing.
    """
    try:
        mod = importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name.split('.')[0] in name.split('.'):
            raise
        package = PIP_NAMES.get(error.name, error.name)
        raise ImportError(f"the authors' {name} needs {error.name}: pip "
                          f'install {package}') from error
    if not osp.abspath(mod.__file__).startswith(ref_dir):
        raise ImportError(f'{name} resolved to {mod.__file__}, not to '
                          f"the authors' code in {ref_dir}")
    return mod


def energy_loss_available(R: SimpleNamespace) -> bool:
    """Whether the authors' dense energy loss can run (rloss' extension)."""
    return R.seg_losses.bilateralfilter_batch is not _missing_extension


def reference_energy_loss(R: SimpleNamespace, images, seg_logits, labels,
                          weight: float = 0.05):
    """``w_reg * get_energy_loss(...)`` as the authors' step calls it.

    Their loss moves tensors with ``.cuda()`` in forward and backward: run
    both inside :func:`cuda_calls_stay_on_cpu` on a machine without CUDA.
    """
    layer = R.seg_losses.DenseEnergyLoss(
        weight=1e-7, sigma_rgb=15, sigma_xy=100, scale_factor=0.5)
    return weight * R.seg_losses.get_energy_loss(
        img=images, logit=seg_logits, label=labels, img_box=None,
        loss_layer=layer).reshape(())


@contextmanager
def cuda_calls_stay_on_cpu() -> Iterator[None]:
    """Make ``Tensor.cuda()``, ``Module.cuda()`` and
    ``torch.cuda.empty_cache()`` no-ops when CUDA is absent."""
    saved = (torch.Tensor.cuda, nn.Module.cuda, torch.cuda.empty_cache)
    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *args, **kwargs: self
        nn.Module.cuda = lambda self, *args, **kwargs: self
        torch.cuda.empty_cache = lambda: None
    try:
        yield
    finally:
        torch.Tensor.cuda, nn.Module.cuda, torch.cuda.empty_cache = saved


def _script_tree(ref_dir: str, script: str):
    import ast
    with open(osp.join(ref_dir, script)) as f:
        return ast.parse(f.read())


def reference_call_kwargs(ref_dir: str, script: str, callee: str) -> dict:
    """The literal keyword arguments of the first ``callee(...)`` call in
    one of the authors' scripts (settings they hard-code in a function)."""
    import ast
    for node in ast.walk(_script_tree(ref_dir, script)):
        if isinstance(node, ast.Call) and getattr(node.func, 'id',
                                                  '') == callee:
            return {kw.arg: ast.literal_eval(kw.value)
                    for kw in node.keywords}
    raise ValueError(f'no {callee}(...) call in {script}')


def reference_energy_settings(ref_dir: str,
                              script: str = 'train_voc.py') -> tuple:
    """``(weight, sigma_rgb, sigma_xy, scale_factor)`` of the script's
    ``DenseEnergyLoss(...)`` call."""
    kwargs = reference_call_kwargs(ref_dir, script, 'DenseEnergyLoss')
    return tuple(kwargs[k] for k in ('weight', 'sigma_rgb', 'sigma_xy',
                                     'scale_factor'))


def build_reference_network(R: SimpleNamespace,
                            crop: int,
                            embed_dims: int,
                            num_layers: int,
                            num_heads: int,
                            out_dim: int,
                            hidden_dim: int = 2048,
                            bottleneck_dim: int = 256,
                            num_classes: int = 21,
                            drop_path: float = 0.1) -> nn.Module:
    """The authors' ``WSSSNetwork`` (as their ``build_model``), any size.

    Patch 16, two class-attention blocks, auxiliary CAM on layer -3,
    LargeFOV decoder and DINO head, randomly initialised.
    """
    import warnings
    from functools import partial
    encoder = R.vit.VisionTransformer(
        img_size=crop, patch_size=16, embed_dim=embed_dims, depth=num_layers,
        num_heads=num_heads, mlp_ratio=4, qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6), cls_depth=2,
        aux_layer=-3, drop_path_rate=drop_path)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # their legacy weight_norm
        projector = R.projector.DINOHead(
            embed_dims, out_dim, hidden_dim=hidden_dim,
            bottleneck_dim=bottleneck_dim)
    return R.network.WSSSNetwork(
        encoder, R.decoder.LargeFOV(embed_dims, num_classes), projector,
        num_classes=num_classes)


class AuthorsLoop:
    """One iteration of the authors' ``train_voc.py``, with their modules.

    Their order and their work per iteration: the multi-scale auxiliary CAM
    of view 2 for the token mask, the student on both views (view 2
    masked), the teacher on both, multi-scale CAMs and PAR pseudo labels of
    *both* views (view 2's are unused, as in their loop), the
    segmentation, dense energy (when rloss' extension is importable),
    affinity and FSR losses; :meth:`step` adds their AdamW with their four
    parameter groups and their per-parameter EMA loop. Their data loading,
    logging and validation are left out, as on the project's side.

    Args:
        R (SimpleNamespace): :func:`load_reference`.
        student, teacher (nn.Module): :func:`build_reference_network`s.
        crop (int): Square view size.
        max_iters (int): Length of their run (temperatures, mask warm-up,
            lr schedule).
        out_dim (int): Projector outputs.
        block_size (int, optional): Mask block in pixels; default 64, or 32
            when 64 does not divide ``crop`` (their ``MaskGenerator`` needs
            whole blocks).
    """

    scales = (1.0, 0.5, 1.5)
    seg_start = 2000  # their hard-coded start of the decoder losses

    def __init__(self,
                 R: SimpleNamespace,
                 student: nn.Module,
                 teacher: nn.Module,
                 crop: int,
                 max_iters: int,
                 out_dim: int,
                 block_size: Optional[int] = None) -> None:
        self.R, self.student, self.teacher = R, student, teacher
        self.max_iters = max_iters
        if block_size is None:
            block_size = 32 if crop % 64 else 64
        self.masker = R.masking.MaskGenerator(
            input_size=crop, patch_size=16, block_size=block_size,
            mask_ratio=0.4)
        self.par = R.par.PAR(num_iter=10, dilations=[1, 2, 4, 8, 12, 24])
        self.fsr_loss = R.fsr_loss.FSRLoss(
            out_dim=out_dim, warmup_epochs=max_iters // 8, epochs=max_iters)
        self.optimizer = None

    def _token_mask(self, view2: torch.Tensor, labels: torch.Tensor,
                    n_iter: int, noise: Optional[torch.Tensor]):
        strategy = ('random' if (n_iter + 1) <= self.max_iters // 5 else
                    'uncertain')
        _, aux = self.R.camutils.multi_scale_cam(self.student, view2,
                                                 scales=self.scales)
        masking = self.R.masking
        rand = masking.torch.rand
        if noise is not None:  # the caller's block scores
            masking.torch.rand = lambda *args, **kwargs: noise.clone()
        try:
            return self.masker(aux, labels, 0.2, 0.7, strategy)
        finally:
            masking.torch.rand = rand

    def _pseudo_label(self, view: torch.Tensor, labels: torch.Tensor):
        """PAR pseudo label and auxiliary CAM of one view."""
        camutils = self.R.camutils
        cam, aux = camutils.multi_scale_cam(self.student, view, self.scales)
        valid, _ = camutils.cam_to_label(
            cam, labels, ignore_mid=True, high_thre=0.7, low_thre=0.25,
            ignore_index=255)
        pseudo = camutils.refine_cams_with_bkg_v2(
            self.par, self.R.imutils.denormalize_img2(view.clone()),
            cams=valid, cls_labels=labels, high_thre=0.7, low_thre=0.25,
            ignore_index=255)
        return pseudo, aux

    def losses(self, views: List[torch.Tensor], labels: torch.Tensor,
               n_iter: int,
               mask_noise: Optional[torch.Tensor] = None) -> tuple:
        """Every loss term, unweighted (``reg`` already times w_reg).

        Args:
            views (list[Tensor]): Two normalised views, each (B, 3, S, S).
            labels (Tensor): Multi-hot image labels, (B, C).
            n_iter (int): Their 0-based iteration.
            mask_noise (Tensor, optional): (B, blocks) scores replacing
                their mask generator's ``torch.rand``.

        Returns:
            tuple[dict, Tensor]: The losses and view 2's block mask.
        """
        R, camutils = self.R, self.R.camutils
        mask2 = self._token_mask(views[1], labels, n_iter, mask_noise)
        mask = torch.cat([torch.zeros_like(mask2), mask2])
        out = self.student(views, mask=mask)
        with torch.no_grad():
            t_out = self.teacher(views[:2])
            pseudo, aux = self._pseudo_label(views[0], labels)
            self._pseudo_label(views[1], labels)
        seg_pred = F.interpolate(out['seg_out'], size=pseudo.shape[-2:],
                                 mode='bilinear', align_corners=False)
        fmap = out['top_fmap']
        _, token_labels = camutils.cam_to_label(
            F.interpolate(aux, size=fmap.shape[-2:], mode='bilinear',
                          align_corners=False), labels, ignore_mid=True,
            high_thre=0.7, low_thre=0.25, ignore_index=255)
        fsr_c, fsr_u = self.fsr_loss(t_out['project_out'], out['project_out'],
                                     None, mask, epoch=n_iter)
        losses = dict(
            cls=sum(F.multilabel_soft_margin_loss(out[k], labels)
                    for k in ('top_cls_out', 'aux_cls_out')),
            seg=R.seg_losses.get_seg_loss(seg_pred, pseudo.long(), 255),
            aff=R.seg_losses.get_masked_ptc_loss(
                fmap, camutils.label_to_aff_mask(token_labels)),
            fsr_c=fsr_c, fsr_u=fsr_u)
        if energy_loss_available(R):
            losses['reg'] = reference_energy_loss(R, views[0], seg_pred,
                                                  pseudo)
        return losses, mask2

    def _build_optimizer(self):
        lr, decay = 6e-5, 0.05
        groups = self.student.get_param_groups()
        return self.R.optim.CosWarmupAdamW(
            params=[dict(params=params, lr=lr * (10 if i >= 2 else 1),
                         weight_decay=decay * (i % 2))
                    for i, params in enumerate(groups)],
            lr=lr, weight_decay=decay, betas=(0.9, 0.999),
            max_iters=self.max_iters, warmup_iters=1500, warmup_ratio=0.1)

    def step(self, views: List[torch.Tensor], labels: torch.Tensor,
             n_iter: int, momentum: float = 0.9995) -> None:
        """Losses, backward, AdamW step and EMA update of one iteration."""
        if self.optimizer is None:
            self.optimizer = self._build_optimizer()
        with cuda_calls_stay_on_cpu():
            losses, _ = self.losses(views, labels, n_iter)
            seg_on = float((n_iter + 1) > self.seg_start)
            loss = (losses['cls'] + 0.1 * losses['fsr_c'] +
                    0.1 * losses['fsr_u'] + 0.2 * losses['aff'] + seg_on *
                    (0.1 * losses['seg'] + losses.get('reg', 0.0)))
            self.optimizer.zero_grad()
            loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            for p_s, p_t in zip(self.student.parameters(),
                                self.teacher.parameters()):
                p_t.data.mul_(momentum).add_((1.0 - momentum) *
                                             p_s.detach().data)


def reference_arg_parser(doc: str):
    """An argument parser for a comparison tool, ``--reference-dir`` added.

    Args:
        doc (str): The tool's module docstring: first line description,
            the rest the epilog.
    """
    import argparse
    parser = argparse.ArgumentParser(
        description=doc.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=doc.split('\n\n', 1)[1])
    parser.add_argument('--reference-dir', required=True,
                        help="a checkout of the authors' FSR code")
    return parser


def reference_defaults(ref_dir: str, script: str = 'train_voc.py') -> dict:
    """The argparse defaults of one of the authors' training scripts.

    Read from the source (their scripts import what this project does not
    install), keeping the literal defaults only.

    Args:
        ref_dir (str): The authors' checkout.
        script (str): ``train_voc.py`` or ``train_coco.py``.

    Returns:
        dict: Option name (without dashes) to default value.
    """
    import ast
    defaults = {}
    for node in ast.walk(_script_tree(ref_dir, script)):
        if not (isinstance(node, ast.Call)
                and getattr(node.func, 'attr', '') == 'add_argument'):
            continue
        name = node.args[0].value.lstrip('-')
        for kw in node.keywords:
            if kw.arg == 'default':
                try:
                    defaults[name] = ast.literal_eval(kw.value)
                except ValueError:
                    pass  # an expression such as os.path.expanduser(...)
    return defaults


def write_name_lists(data_root: str, names: List[str], list_dir: str,
                     split: str, num_classes: int = 21) -> None:
    """The name list and one-hot label file the authors' VOC datasets read.

    ``{list_dir}/{split}.txt`` lists ``names``; ``cls_labels_onehot.npy``
    holds each name's foreground classes, taken from its mask in
    ``{data_root}/SegmentationClassAug``.
    """
    import os

    import numpy as np
    from PIL import Image
    os.makedirs(list_dir, exist_ok=True)
    with open(osp.join(list_dir, f'{split}.txt'), 'w') as f:
        f.write('\n'.join(names) + '\n')
    onehot = {}
    for name in names:
        mask = np.asarray(Image.open(
            osp.join(data_root, 'SegmentationClassAug', f'{name}.png')))
        classes = [c for c in np.unique(mask) if 0 < c < num_classes]
        onehot[name] = np.zeros(num_classes - 1, np.float32)
        onehot[name][np.asarray(classes, int) - 1] = 1
    np.save(osp.join(list_dir, 'cls_labels_onehot.npy'), onehot)


def grayscale_mask_root(data_root: str, names: List[str],
                        root: str) -> str:
    """A VOC root whose ``SegmentationClassAug`` masks are grayscale.

    The authors read masks with imageio, which expands palette PNGs to RGB;
    the released ``SegmentationClassAug`` masks are grayscale, synthetic
    ones may be palette PNGs. Images are linked, not copied.
    """
    import os

    import numpy as np
    from PIL import Image
    os.makedirs(osp.join(root, 'SegmentationClassAug'), exist_ok=True)
    images = osp.join(root, 'JPEGImages')
    if not osp.exists(images):
        os.symlink(osp.abspath(osp.join(data_root, 'JPEGImages')), images)
    for name in names:
        mask = np.asarray(Image.open(
            osp.join(data_root, 'SegmentationClassAug', f'{name}.png')))
        Image.fromarray(mask.astype(np.uint8)).save(  # 2-D uint8: 'L'
            osp.join(root, 'SegmentationClassAug', f'{name}.png'))
    return root


def time_authors_inference(R: SimpleNamespace, network: nn.Module,
                           data_root: str, names: List[str],
                           work_dir: str) -> dict:
    """Run the authors' ``infer_voc.py`` test on ``names``, timed.

    Their two stages, as their script runs them: ``main_evaluate`` (per
    image: scales 1.0 / 1.25 / 1.5, each with its flip, max fusion of the
    decoder logits, logits saved as .npy) and ``main_crf``
    (dense CRF of every saved logit map in a joblib pool of 0.8x the CPU
    count, predictions saved as PNGs).

    Args:
        R (SimpleNamespace): :func:`load_reference` (puts their folder on
            ``sys.path``).
        network (nn.Module): Their ``WSSSNetwork``.
        data_root (str): VOC layout with ``JPEGImages`` and
            ``SegmentationClassAug``.
        names (list[str]): Image names, two or more (their name-list
            reader, np.loadtxt, reads one line as no list).
        work_dir (str): Where their outputs go.

    Returns:
        dict: ``images``, ``seconds_network``, ``seconds_crf``,
        ``crf_jobs``; their scores ``seg_score`` (fused logits) and
        ``crf_score`` (after the CRF); and where their inputs and outputs
        are: ``data_root``, ``list_dir``, ``logits_dir`` (fused logits,
        ``{name}.npy``), ``segs_dir`` (labels after the CRF,
        ``{name}.png``).
    """
    import os
    import time
    from torch.utils.data import DataLoader
    infer_voc = import_reference_module(R.ref_dir, 'infer_voc')
    voc = import_reference_module(R.ref_dir, 'datasets.voc')

    list_dir = osp.join(work_dir, 'lists')
    write_name_lists(data_root, names, list_dir, 'val')
    data_root = grayscale_mask_root(data_root, names,
                                    osp.join(work_dir, 'data'))
    dirs = {k: osp.join(work_dir, k)
            for k in ('logits_dir', 'segs_dir', 'segs_rgb_dir', 'cams_dir')}
    for path in dirs.values():
        os.makedirs(path, exist_ok=True)
    # their script's defaults (its functions read the module-level args),
    # except the CAM pictures (save_cam), which the modes timed against it
    # do not draw
    infer_voc.args = SimpleNamespace(
        data_folder=data_root, list_folder=list_dir, infer_set='val',
        num_classes=21, scales=(1.0, 1.25, 1.5), save_cam=False, **dirs)
    dataset = voc.VOC12SegDataset(
        root_dir=data_root, name_list_dir=list_dir, split='val',
        stage='val', aug=False, ignore_index=255)
    with cuda_calls_stay_on_cpu():
        start = time.perf_counter()
        seg_score = infer_voc.main_evaluate(network,
                                            DataLoader(dataset, batch_size=1))
        middle = time.perf_counter()
        crf_score = infer_voc.main_crf()
        end = time.perf_counter()
    return dict(images=len(names), seconds_network=middle - start,
                seconds_crf=end - middle,
                crf_jobs=int(os.cpu_count() * 0.8), seg_score=seg_score,
                crf_score=crf_score, data_root=data_root, list_dir=list_dir,
                **dirs)
