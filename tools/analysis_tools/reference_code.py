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
from typing import Iterator

import torch
import torch.nn as nn

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
        module('texttable', Texttable=object)


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
    modules = {}
    for attr, name in REFERENCE_MODULES.items():
        mod = importlib.import_module(name)
        if not osp.abspath(mod.__file__).startswith(ref_dir):
            raise ImportError(f'{name} resolved to {mod.__file__}, not to '
                              f'the authors\' code in {ref_dir}')
        modules[attr] = mod
    return SimpleNamespace(**modules)


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
    """Make ``Tensor.cuda()`` a no-op when CUDA is absent."""
    cuda = torch.Tensor.cuda
    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda = cuda


def _script_tree(ref_dir: str, script: str):
    import ast
    with open(osp.join(ref_dir, script)) as f:
        return ast.parse(f.read())


def reference_energy_settings(ref_dir: str,
                              script: str = 'train_voc.py') -> tuple:
    """``(weight, sigma_rgb, sigma_xy, scale_factor)`` of the script's
    ``DenseEnergyLoss(...)`` call."""
    import ast
    for node in ast.walk(_script_tree(ref_dir, script)):
        if isinstance(node, ast.Call) and getattr(
                node.func, 'id', '') == 'DenseEnergyLoss':
            kwargs = {kw.arg: ast.literal_eval(kw.value)
                      for kw in node.keywords}
            return tuple(kwargs[k] for k in ('weight', 'sigma_rgb',
                                             'sigma_xy', 'scale_factor'))
    raise ValueError(f'no DenseEnergyLoss(...) call in {script}')


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
