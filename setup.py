"""Packaging for mmseg-fsr (an MMSegmentation 1.x plugin).

Install (in an environment that already has torch and a full mmcv 2.1.0)::

    pip install -e .                  # development (editable)
    pip install .                     # regular install / wheel
    pip install -e ".[tests,optional]"

``install_requires`` holds ``requirements/runtime.txt`` plus the pure-Python
OpenMMLab pins of ``requirements/mminstall.txt`` (mmengine, mmsegmentation,
mmpretrain). It deliberately lists neither torch nor mmcv: pip must never
replace the installed torch build, and mmcv needs compiled ops that pip cannot
build from the sdist for torch >= 2.6 without patching (see
``tools/install/build_mmcv.sh``). ``tools/install/setup_env.sh`` installs all
of it in the right order; ``pip install ".[mim]"`` / ``mim install`` add the
full ``mminstall.txt`` (with mmcv) as OpenMMLab projects do.

Like OpenMMLab codebases, the package carries ``configs/`` and ``tools/``
under ``mmseg_fsr/.mim/``, so the package finds its own configs wherever it
is installed, and on a regular install ``mim train mmseg_fsr
<config-file-name>`` finds the config and runs ``.mim/tools/train.py``.
Wheels get copies; an editable install gets symbolic links to the
repository's folders (git-ignored), as mmseg's ``setup.py develop`` does.
mim looks for ``.mim`` next to the installed distribution (site-packages),
which an editable install leaves empty: there, ``mim train mmsegmentation
<config path>`` is the form that works (README, tests/test_install.py).
"""
import os
import os.path as osp
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = osp.dirname(osp.abspath(__file__))
MIM_DIRS = ('configs', 'tools')


def parse_requirements(fname):
    """Read a requirements file: skip comments, options and ``-r`` includes
    (``requirements.txt`` at the top level only chains the split files)."""
    reqs = []
    with open(osp.join(HERE, fname)) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if line and not line.startswith('-'):
                reqs.append(line)
    return reqs


def get_version():
    scope = {}
    with open(osp.join(HERE, 'mmseg_fsr', 'version.py')) as f:
        exec(compile(f.read(), 'version.py', 'exec'), scope)
    return scope['__version__']


def link_mim_dirs():
    """``mmseg_fsr/.mim/{configs,tools}`` -> the repository's folders."""
    mim_root = osp.join(HERE, 'mmseg_fsr', '.mim')
    os.makedirs(mim_root, exist_ok=True)
    for name in MIM_DIRS:
        link = osp.join(mim_root, name)
        if not osp.lexists(link):
            os.symlink(osp.join('..', '..', name), link)


class BuildPyWithMim(build_py):
    """``build_py`` that also copies ``configs/`` and ``tools/`` into
    ``<build_lib>/mmseg_fsr/.mim/`` (what ``mim`` looks for)."""

    def run(self):
        super().run()
        if getattr(self, 'editable_mode', False):
            link_mim_dirs()
            return
        mim_root = osp.join(self.build_lib, 'mmseg_fsr', '.mim')
        for name in MIM_DIRS:
            src = osp.join(HERE, name)
            if not osp.isdir(src):
                continue
            dst = osp.join(mim_root, name)
            if osp.lexists(dst):
                shutil.rmtree(dst) if osp.isdir(dst) and not osp.islink(
                    dst) else os.remove(dst)
            shutil.copytree(
                src,
                dst,
                ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))


install_requires = parse_requirements('requirements/runtime.txt') + [
    r for r in parse_requirements('requirements/mminstall.txt')
    if not r.startswith('mmcv')
]
extras_require = {
    'tests': parse_requirements('requirements/tests.txt'),
    'optional': parse_requirements('requirements/optional.txt'),
    'mim': parse_requirements('requirements/mminstall.txt'),
}
extras_require['all'] = sorted(
    set(extras_require['tests'] + extras_require['optional'] +
        extras_require['mim']))

setup(
    name='mmseg-fsr',
    version=get_version(),
    description='FSR (Progressive Feature Self-Reinforcement, AAAI 2024) for '
    'weakly supervised semantic segmentation, as an MMSegmentation 1.x plugin',
    keywords='weakly supervised semantic segmentation, WSSS, MMSegmentation',
    packages=find_packages(include=['mmseg_fsr', 'mmseg_fsr.*']),
    include_package_data=True,
    python_requires='>=3.8',
    install_requires=install_requires,
    extras_require=extras_require,
    cmdclass={'build_py': BuildPyWithMim},
    classifiers=[
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
    zip_safe=False,
)
