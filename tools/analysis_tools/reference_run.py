"""Whole training runs: the FSR authors' train_voc.py against tools/train.py.

Not part of CI (minutes per run). Both sides train the same small network
from the same initial weights on the same synthetic VOC-layout data
(``mmseg_fsr.testing.generate_synthetic_voc``), one process per run:

- the authors' side runs their ``train_voc.train`` itself, imported from
  ``--reference-dir``: their data set, ``MultiviewTransform``, loader, loop,
  losses, optimiser, EMA and validation. Run-time shims only: ``.cuda()``
  stays on the CPU, ``build_model`` returns the small network with the
  shared initial weights, and their hard-coded decoder start (iteration
  2,000 of 20,000) is moved to the same tenth of this run, as the project's
  ``loss_start_iters`` does;
- the project's side runs ``tools/train.py`` on the paper config with the
  same sizes, iterations and hyper-parameters.

Every loss term is recorded each iteration (weighted as it enters the total
loss), and both sides' final students are scored by ``tools/test.py`` with
the paper config's evaluator (decoder, CAM and PAR mIoU at native size), so
that only training differs. Prints a table (mean +- std over seeds) and
writes one PNG of the loss curves.

Example (rloss' bilateral filter on PYTHONPATH for the dense energy term)::

    PYTHONPATH=.:/path/to/rloss_ext \\
        python tools/analysis_tools/reference_run.py \\
        --reference-dir ../feature-self-reinforcement --iters 200 \\
        --png docs/reference_run.png
"""
import argparse
import json
import os
import os.path as osp
import re
import subprocess
import sys
from typing import Dict, List

import numpy as np

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(osp.dirname(HERE))
sys.path.insert(0, HERE)

#: Loss terms, as the project logs them, with the weight the authors' loop
#: gives the raw value (the project logs weighted terms).
TERMS = {'loss_cls': 1.0, 'loss_cls_aux': 1.0, 'decode.loss_seg': 0.1,
         'loss_reg': 0.05, 'loss_aff': 0.2, 'loss_fsr_c': 0.1,
         'loss_fsr_u': 0.1}
BLOCK = 32  # mask block (px): 2 x 2 patches, as the quick-start config
METRICS = ('mIoU', 'cam/mIoU', 'par/mIoU')


def sizes(args) -> dict:
    """Hyper-parameters both sides share, scaled to ``args.iters``."""
    return dict(iters=args.iters, batch=args.batch, lr=args.lr,
                momentum=args.momentum, warmup=int(0.075 * args.iters),
                seg_start=args.iters // 10)


# --------------------------------------------------------------------------
# shared inputs
# --------------------------------------------------------------------------
def prepare(args) -> dict:
    """Synthetic data, the initial weights per seed, the project config."""
    import torch
    from reference_code import (grayscale_mask_root, load_reference,
                                write_name_lists)
    from reference_parity import (SIZE, build_project, build_reference,
                                  map_reference, project_config,
                                  unmapped_keys)

    import mmseg_fsr  # noqa: F401  (before the authors' top-level names)
    from mmengine.registry import init_default_scope
    from mmseg_fsr.testing import generate_synthetic_voc
    from mmseg_fsr.utils.config_utils import set_data_root
    init_default_scope('mmseg')
    R = load_reference(args.reference_dir)
    data = osp.join(args.work_dir, 'data')
    generate_synthetic_voc(data, num_train=args.train_images,
                           num_val=args.val_images,
                           img_size=(args.image_size, args.image_size))
    names = {}
    for split, list_file in (('train_aug', 'aug.txt'), ('val', 'val.txt')):
        with open(osp.join(data, 'ImageSets/Segmentation', list_file)) as f:
            names[split] = f.read().split()
        write_name_lists(data, names[split], osp.join(args.work_dir, 'lists'),
                         split)
    everything = names['train_aug'] + names['val']
    # one label file for both splits (each call above rewrote it)
    write_name_lists(data, everything, osp.join(args.work_dir, 'lists'), 'all')
    grayscale_mask_root(data, everything, osp.join(args.work_dir,
                                                   'data_gray'))
    for seed in args.seeds:
        torch.manual_seed(seed)
        net = build_reference(R, drop_path=0.1)
        torch.save(net.state_dict(), init_path(args, seed, 'authors'))
        mapped = map_reference(net.state_dict())
        mapped.update({  # the teacher starts as the student, as theirs
            k: v for k, v in map_reference(net.state_dict(),
                                           'teacher.').items()
            if k.startswith(('teacher.backbone.',
                             'teacher.aggregation_head.'))})
        missing = build_project(project_config(drop_path=0.1)).load_state_dict(
            mapped, strict=False)
        left = unmapped_keys(missing.missing_keys)
        if left or missing.unexpected_keys:
            raise RuntimeError(f'key map incomplete: {left}')
        torch.save(dict(state_dict=mapped, meta={}),
                   init_path(args, seed, 'ours'))
    s = sizes(args)
    cfg = project_config(drop_path=0.1)
    set_data_root(cfg, data)
    step = next(t for t in cfg.train_dataloader.dataset.pipeline
                if t.type == 'WSSSMultiView')
    step.crop_size = SIZE
    cfg.train_dataloader.update(batch_size=s['batch'], num_workers=0,
                                persistent_workers=False)
    for loader in ('val_dataloader', 'test_dataloader'):
        cfg[loader].update(num_workers=0, persistent_workers=False)
    cfg.model.mask_neck.block_size = BLOCK
    cfg.optim_wrapper.optimizer.lr = s['lr']
    cfg.train_cfg.update(max_iters=s['iters'], val_interval=s['iters'])
    # every iteration's own values (mmengine averages over 10 by default)
    cfg.default_hooks.logger.interval = 1
    cfg.log_processor.window_size = 1
    cfg.default_hooks.checkpoint.update(interval=s['iters'],
                                        max_keep_ckpts=1, save_best=None)
    cfg.custom_hooks = [h for h in cfg.custom_hooks
                        if h.type != 'WSSSVisualizationHook']
    cfg.model.teacher_cfg.momentum = s['momentum']
    cfg.log_level = 'WARNING'
    cfg.dump(osp.join(args.work_dir, 'project_config.py'))
    return s


def init_path(args, seed: int, side: str) -> str:
    return osp.join(args.work_dir, f'init_seed{seed}_{side}.pth')


def run_dir(args, side: str, seed: int) -> str:
    return osp.join(args.work_dir, f'{side}_seed{seed}')


# --------------------------------------------------------------------------
# the authors' run (in its own process: their top-level module names)
# --------------------------------------------------------------------------
def authors_run(args, seed: int) -> None:
    """Their ``train_voc.train`` on CPU, every loss term recorded."""
    import types

    import torch
    from reference_code import cuda_calls_stay_on_cpu, load_reference
    from reference_parity import K, SIZE, build_reference

    import mmseg_fsr  # noqa: F401
    R = load_reference(args.reference_dir)
    s = sizes(args)
    with open(osp.join(R.ref_dir, 'train_voc.py')) as f:
        source = f.read()
    start = '(n_iter + 1) <= 2000:'
    if source.count(start) != 1:
        raise RuntimeError('train_voc.py no longer starts the decoder at '
                           'iteration 2000; update this shim')
    train_voc = types.ModuleType('train_voc')
    train_voc.__file__ = osp.join(R.ref_dir, 'train_voc.py')
    exec(compile(source.replace(start, f'(n_iter + 1) <= {s["seg_start"]}:'),
                 train_voc.__file__, 'exec'), train_voc.__dict__)

    initial = torch.load(init_path(args, seed, 'authors'))

    def build_model(*args, **kwargs):  # their student, then their teacher
        network = build_reference(R, drop_path=0.1)
        network.load_state_dict(initial)
        return network

    train_voc.build_model = build_model

    record: List[Dict[str, float]] = []
    F = train_voc.F
    cls_loss = F.multilabel_soft_margin_loss

    def cls_recorder(*a, **k):  # each iteration: top, then auxiliary
        out = cls_loss(*a, **k)
        if not record or 'loss_cls_aux' in record[-1]:
            record.append(dict(loss_cls=float(out)))
        else:
            record[-1]['loss_cls_aux'] = float(out)
        return out

    train_voc.F = types.SimpleNamespace(
        **{k: getattr(F, k) for k in dir(F) if not k.startswith('__')})
    train_voc.F.multilabel_soft_margin_loss = cls_recorder
    for name, key in (('get_seg_loss', 'decode.loss_seg'),
                      ('get_energy_loss', 'loss_reg'),
                      ('get_masked_ptc_loss', 'loss_aff')):
        fn = getattr(train_voc, name)
        setattr(train_voc, name, _term_recorder(record, fn, key, TERMS[key]))
    loss_cls = train_voc.FSRLoss

    class RecordedFSRLoss(loss_cls):
        def forward(self, *a, **k):
            fsr_c, fsr_u = super().forward(*a, **k)
            record[-1]['loss_fsr_c'] = float(fsr_c) * TERMS['loss_fsr_c']
            record[-1]['loss_fsr_u'] = float(fsr_u) * TERMS['loss_fsr_u']
            return fsr_c, fsr_u

    train_voc.FSRLoss = RecordedFSRLoss
    out = run_dir(args, 'authors', seed)
    targs = train_voc.parser.parse_args([
        '--data_folder', osp.join(args.work_dir, 'data_gray'),
        '--list_folder', osp.join(args.work_dir, 'lists'),
        '--work_dir', out, '--input_size', str(SIZE),
        '--spg', str(s['batch']), '--lr', str(s['lr']),
        '--max_iters', str(s['iters']), '--fsr_iters', str(s['iters']),
        '--warmup_iters', str(s['warmup']), '--eval_iters', str(s['iters']),
        '--log_iters', str(max(1, s['iters'] // 10)),
        '--momentum', str(s['momentum']), '--block_size', str(BLOCK),
        '--out_dim', str(K),
        '--seed', str(seed), '--num_workers', '0'])
    torch.cuda.get_device_name = lambda *a: 'CPU'
    with cuda_calls_stay_on_cpu():
        train_voc.train(targs)
    with open(osp.join(out, 'losses.json'), 'w') as f:
        json.dump(record, f)


def _term_recorder(record, fn, key, weight):
    def wrapped(*a, **k):
        out = fn(*a, **k)
        record[-1][key] = float(out) * weight
        return out
    return wrapped


def authors_checkpoint(args, seed: int) -> str:
    """Their final student and teacher as a project checkpoint."""
    import torch
    from reference_parity import map_reference
    ckpt = osp.join(run_dir(args, 'authors', seed), 'checkpoints')
    student = torch.load(osp.join(ckpt, 'student.pth'))
    teacher = torch.load(osp.join(ckpt, 'teacher.pth'))
    mapped = map_reference(student)
    mapped.update({k: v for k, v in map_reference(teacher, 'teacher.').items()
                   if k.startswith(('teacher.backbone.',
                                    'teacher.aggregation_head.'))})
    path = osp.join(run_dir(args, 'authors', seed), 'final_as_project.pth')
    torch.save(dict(state_dict=mapped, meta={}), path)
    return path


# --------------------------------------------------------------------------
# the project's run and the common test
# --------------------------------------------------------------------------
def python(args, *argv: str) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [REPO] + os.environ.get('PYTHONPATH', '').split(os.pathsep)),
        OMP_NUM_THREADS=str(args.threads))
    done = subprocess.run([sys.executable, *argv], cwd=REPO, env=env,
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f'{" ".join(argv)} failed:\n{done.stdout[-3000:]}'
                           f'\n{done.stderr[-6000:]}')
    return done.stdout + done.stderr


def our_run(args, seed: int) -> None:
    out = run_dir(args, 'ours', seed)
    python(args, 'tools/train.py', osp.join(args.work_dir,
                                            'project_config.py'),
           '--work-dir', out, '--cfg-options', f'randomness.seed={seed}',
           f'load_from={init_path(args, seed, "ours")}')
    scalars = sorted(
        osp.join(root, f) for root, _, files in os.walk(out) for f in files
        if f == 'scalars.json')[-1]
    record = []
    with open(scalars) as f:
        for line in f:
            entry = json.loads(line)
            if 'loss' in entry and 'iter' in entry:
                record.append({k: entry[k] for k in TERMS if k in entry})
    with open(osp.join(out, 'losses.json'), 'w') as f:
        json.dump(record, f)


def test(args, checkpoint: str, *options: str) -> Dict[str, float]:
    """``tools/test.py`` with the run's config: decoder, CAM, PAR mIoU."""
    out = python(args, 'tools/test.py', osp.join(args.work_dir,
                                                 'project_config.py'),
                 checkpoint, '--work-dir',
                 osp.join(osp.dirname(checkpoint), 'test'), *options,
                 '--cfg-options', 'log_level=INFO')
    line = [x for x in out.splitlines() if 'Iter(test)' in x][-1]
    return {k: float(re.search(rf'(?<![/\w]){re.escape(k)}: ([\d.]+)',
                               line).group(1)) for k in METRICS}


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------
def curves(args, side: str) -> Dict[str, np.ndarray]:
    """Per term, (seeds, iters) loss values (NaN where not logged)."""
    runs = []
    for seed in args.seeds:
        with open(osp.join(run_dir(args, side, seed), 'losses.json')) as f:
            runs.append(json.load(f)[:args.iters])
    return {k: np.array([[it.get(k, np.nan) for it in run] for run in runs])
            for k in TERMS}


def plot(args, losses: Dict[str, Dict[str, np.ndarray]], path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    window = max(1, args.iters // 30)
    kernel = np.ones(window) / window
    for ax, term in zip(axes.flat, TERMS):
        for side, colour, name in (
                ('authors', 'tab:red', "authors' train_voc.py"),
                ('ours', 'tab:blue', 'tools/train.py')):
            for i, run in enumerate(losses[side][term]):
                x = np.arange(len(run)) + 1
                valid = ~np.isnan(run)
                if valid.sum() < window:
                    continue
                smooth = np.convolve(run[valid], kernel, mode='valid')
                ax.plot(x[valid][window - 1:], smooth, color=colour,
                        alpha=0.8, lw=1,
                        label=name if i == 0 else None)
        ax.set_title(f'{term} (weighted; seeds as lines)')
        ax.set_xlabel('iteration')
    axes.flat[0].legend()
    axes.flat[-1].axis('off')
    fig.suptitle(f'authors\' train_voc.py vs tools/train.py: {args.iters} '
                 f'iterations, batch {args.batch}, seeds {args.seeds} '
                 f'(moving mean over {window} iterations)')
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def report(args) -> str:
    """Markdown table: final mIoU and late losses, mean +- std over seeds.

    ``--step report`` reuses the scores of an earlier report.
    """
    losses = {side: curves(args, side) for side in ('authors', 'ours')}
    saved = osp.join(args.work_dir, 'scores.json')
    if args.step == 'report' and osp.exists(saved):
        with open(saved) as f:
            scores = json.load(f)
    else:
        scores = {side: [] for side in losses}
        for seed in args.seeds:
            # their checkpoints lack the project-only state (the FSR
            # centres live in their loss; the teacher's last step), which
            # testing does not read
            scores['authors'].append(
                test(args, authors_checkpoint(args, seed),
                     '--allow-partial-checkpoint'))
            scores['ours'].append(test(args, osp.join(
                run_dir(args, 'ours', seed), f'iter_{args.iters}.pth')))
        with open(saved, 'w') as f:
            json.dump(scores, f, indent=1)
    lines = ['| side | decoder mIoU | CAM mIoU | PAR mIoU | '
             + ' | '.join(f'{k}, last 10%' for k in TERMS) +
             ' | NaN seg-loss iterations |', '|---' * (5 + len(TERMS)) + '|']
    tail = max(1, args.iters // 10)
    for side in losses:
        cells = []
        for k in METRICS:
            v = np.array([s[k] for s in scores[side]])
            cells.append(f'{v.mean():.2f} ± {v.std():.2f}')
        for k in TERMS:
            v = np.nanmean(losses[side][k][:, -tail:], axis=1)
            cells.append(f'{np.mean(v):.4g} ± {np.std(v):.2g}')
        cells.append(' / '.join(str(n) for n in nan_seg_losses(args, side)))
        lines.append(f'| {side} | ' + ' | '.join(cells) + ' |')
    plot(args, losses, args.png)
    return '\n'.join(lines)


def nan_seg_losses(args, side: str) -> List[int]:
    """Per seed, iterations whose decoder loss was NaN (the authors' on a
    batch whose pseudo labels hold no foreground pixel)."""
    counts = []
    for seed in args.seeds:
        with open(osp.join(run_dir(args, side, seed), 'losses.json')) as f:
            run = json.load(f)[:args.iters]
        counts.append(sum(np.isnan(it.get('decode.loss_seg', 0.0))
                          for it in run))
    return counts


def main(argv=None) -> int:
    from reference_code import reference_arg_parser
    parser = reference_arg_parser(__doc__)
    parser.add_argument('--work-dir', default='work_dirs/reference_run')
    parser.add_argument('--iters', type=int, default=200)
    parser.add_argument('--crop', type=int, default=64,
                        help='view size (a multiple of 32: 16-px patches, '
                        f'{BLOCK}-px mask blocks)')
    parser.add_argument('--image-size', type=int, default=96,
                        help='side of the synthetic images')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--lr', type=float, default=5e-4)
    parser.add_argument('--momentum', type=float, default=0.99,
                        help='teacher momentum at the start (-> 1)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--train-images', type=int, default=64)
    parser.add_argument('--val-images', type=int, default=16)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--png', default='docs/reference_run.png')
    parser.add_argument(
        '--step', choices=('all', 'ours', 'report', 'authors'),
        default='all', help="'ours': rerun only the project's side; "
        "'report': table and PNG of finished runs")
    parser.add_argument('--seed', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.work_dir = osp.abspath(args.work_dir)
    args.reference_dir = osp.abspath(args.reference_dir)
    args.png = osp.abspath(args.png)
    import reference_parity
    import torch
    reference_parity.SIZE = args.crop  # the comparison size of its helpers
    torch.set_num_threads(args.threads)
    if args.step == 'authors':
        authors_run(args, args.seed)
        return 0
    if args.step in ('all', 'ours'):
        os.makedirs(args.work_dir, exist_ok=True)
        print(f'sizes: {prepare(args)}', flush=True)
        common = ['--reference-dir', args.reference_dir, '--work-dir',
                  args.work_dir, '--iters', str(args.iters), '--crop',
                  str(args.crop), '--batch',
                  str(args.batch), '--lr', str(args.lr), '--momentum',
                  str(args.momentum), '--threads', str(args.threads)]
        for seed in args.seeds:
            if args.step == 'all':
                print(f'seed {seed}: authors', flush=True)
                python(args, __file__, *common, '--step', 'authors',
                       '--seed', str(seed))
            print(f'seed {seed}: ours', flush=True)
            our_run(args, seed)
    print(report(args))
    return 0


if __name__ == '__main__':
    sys.exit(main())
