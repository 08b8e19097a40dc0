"""The fence around private names of other packages (mmdtm/upstream.py):
the list, its check against the installed versions, the one error an
upgrade that breaks a name produces, and a scan that no other module of
mmdtm touches a private name of torch, MMEngine, MMPretrain, MMSegmentation
or open_clip."""
import ast
import importlib
import inspect
import os.path as osp
import pkgutil
import re
from typing import Dict, List, Set

import pytest
from mmengine.hooks import CheckpointHook
from mmengine.runner import IterBasedTrainLoop

import mmdtm
from mmdtm import upstream
from mmdtm.upstream import (FENCED, SUPPORTED, Private, UpstreamChangedError,
                            check)

FOREIGN = ('torch', 'mmengine', 'mmpretrain', 'mmseg', 'open_clip')
PACKAGE = osp.dirname(mmdtm.__file__)


def test_the_fenced_names_and_their_check():
    """Every private name mmdtm uses, checked against what is installed."""
    assert sorted(e.qualname for e in FENCED) == sorted([
        'mmengine.runner.Runner._load_from',
        'mmengine.runner.Runner._resume',
        'mmengine.runner.Runner._timestamp',
        'mmengine.hooks.CheckpointHook._save_checkpoint_with_step',
        'mmengine.runner.loops._InfiniteDataloaderIterator',
        'mmengine.runner.loops._InfiniteDataloaderIterator.__init__',
        'mmengine.runner.loops._InfiniteDataloaderIterator._dataloader',
        'mmengine.runner.loops._InfiniteDataloaderIterator._iterator',
        'mmengine.runner.loops._InfiniteDataloaderIterator._epoch',
        'mmengine.runner.IterBasedTrainLoop._decide_current_val_interval',
        'mmengine.runner.EpochBasedTrainLoop._epoch',
        'mmengine.model.BaseModule._params_init_info',
        'mmengine.dist.utils._init_dist_slurm',
        'mmengine.dist.utils._init_dist_mpi',
        'mmpretrain.models.backbones.beit.BEiTViT.'
        '_prepare_relative_position_bias_table',
        'torch.nn.Module._apply',
        'torch.utils.data.DataLoader._iterator',
        'torch.utils.data.dataloader._MultiProcessingDataLoaderIter.'
        '_shutdown_workers',
    ])
    assert {e.dist for e in FENCED} <= set(SUPPORTED)
    check()  # the installed versions have them all


def test_a_removed_or_changed_name_fails_with_one_error(monkeypatch):
    monkeypatch.delattr(CheckpointHook, '_save_checkpoint_with_step')
    monkeypatch.setattr(IterBasedTrainLoop, '_decide_current_val_interval',
                        lambda self, step: None)
    with pytest.raises(UpstreamChangedError) as info:
        check()
    message = str(info.value)
    version = upstream.installed_version('mmengine')
    assert f'mmengine {version} (mmdtm supports mmengine>=' in message
    assert 'CheckpointHook._save_checkpoint_with_step is gone' in message
    assert ("_decide_current_val_interval takes ('self', 'step'), mmdtm "
            "expects ('self',)") in message
    assert message.count('mmengine ') == 1  # one package, one entry


class _Owner:

    def __init__(self) -> None:
        self._kept = 1


def test_an_instance_attribute_no_longer_assigned_fails():
    owner = f'{__name__}._Owner'
    check([Private('torch', owner, '_kept', assigned=True)])
    with pytest.raises(UpstreamChangedError,
                       match=r'torch \S+ \(mmdtm supports torch>=2\.1,<3'
                       r'\).*_Owner\._gone is no longer assigned'):
        check([Private('torch', owner, '_gone', assigned=True)])
    with pytest.raises(UpstreamChangedError, match='mmdtm.gone is gone'):
        check([Private('mmengine', 'mmdtm.gone', '_x')])


# --- the scan ----------------------------------------------------------------
def _private(name: str) -> bool:
    return name.startswith('_') and not (name.startswith('__')
                                         and name.endswith('__'))


def _modules() -> Dict[str, str]:
    """mmdtm's module names -> source files, upstream.py excluded."""
    found = {}
    for info in pkgutil.walk_packages([PACKAGE], 'mmdtm.'):
        if info.name != 'mmdtm.upstream':
            spec = importlib.util.find_spec(info.name)
            found[info.name] = spec.origin
    found['mmdtm'] = mmdtm.__file__
    return found


def _foreign_privates(cls: type) -> Set[str]:
    """Private names that ``cls`` inherits from the foreign packages: class
    attributes, and ``self._x`` their code assigns or reads."""
    names: Set[str] = set()
    for base in cls.__mro__:
        if base.__module__.split('.')[0] not in FOREIGN:
            continue
        names.update(n for n in vars(base) if _private(n))
        try:
            source = inspect.getsource(base)
        except (OSError, TypeError):
            continue
        names.update(re.findall(r'self\.(_\w+)', source))
    return {n for n in names if _private(n)}


class _Scan(ast.NodeVisitor):
    """Private names of other packages touched by one module."""

    def __init__(self, module, own: Set[str]) -> None:
        self.module, self.own = module, own
        self.classes: List[Set[str]] = []  # foreign privates, innermost last
        self.found: List[str] = []

    def _report(self, node, what: str) -> None:
        self.found.append(f'{self.module.__name__}:{node.lineno}: {what}')

    def visit_ImportFrom(self, node) -> None:
        parts = (node.module or '').split('.')
        if parts[0] in FOREIGN:
            names = parts[1:] + [a.name for a in node.names]
            for name in filter(_private, names):
                self._report(node, f'from {node.module} import {name}')
        self.generic_visit(node)

    def visit_Import(self, node) -> None:
        for alias in node.names:
            parts = alias.name.split('.')
            if parts[0] in FOREIGN and any(map(_private, parts[1:])):
                self._report(node, f'import {alias.name}')

    def visit_ClassDef(self, node) -> None:
        cls = getattr(self.module, node.name, None)
        self.classes.append(_foreign_privates(cls) if isinstance(
            cls, type) and cls.__module__ == self.module.__name__ else set())
        for item in node.body:
            if (isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
                    and item.name in self.classes[-1]):
                self._report(item, f'overrides {node.name}.{item.name}')
        self.generic_visit(node)
        self.classes.pop()

    def _name(self, node, name: str, on_self: bool) -> None:
        if not _private(name):
            return
        foreign = self.classes[-1] if self.classes else set()
        if (on_self and name in foreign) or name not in self.own:
            self._report(node, f'.{name}')

    def visit_Attribute(self, node) -> None:
        value = node.value
        on_self = (isinstance(value, ast.Name) and value.id in ('self', 'cls')
                   or isinstance(value, ast.Call)
                   and getattr(value.func, 'id', None) == 'super')
        self._name(node, node.attr, on_self)
        self.generic_visit(node)

    def visit_Call(self, node) -> None:
        if (getattr(node.func, 'id', None) in ('getattr', 'hasattr',
                                                'setattr', 'delattr')
                and len(node.args) > 1
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)):
            on_self = getattr(node.args[0], 'id', None) == 'self'
            self._name(node, node.args[1].value, on_self)
        self.generic_visit(node)


def _own_names(trees: Dict[str, ast.AST]) -> Set[str]:
    """Private names mmdtm itself defines: functions, classes, module
    variables, and ``self._x = ...`` in its classes' code (unless a foreign
    base class has that name)."""
    own: Set[str] = set()
    for name, tree in trees.items():
        module = importlib.import_module(name)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                 ast.ClassDef)):
                own.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx,
                                                           ast.Store):
                own.add(node.id)
        for cls_node in (n for n in ast.walk(tree)
                         if isinstance(n, ast.ClassDef)):
            cls = getattr(module, cls_node.name, None)
            foreign = _foreign_privates(cls) if isinstance(cls, type) \
                else set()
            for node in ast.walk(cls_node):
                if (isinstance(node, ast.Attribute)
                        and isinstance(node.ctx, ast.Store)
                        and getattr(node.value, 'id', None) == 'self'
                        and node.attr not in foreign):
                    own.add(node.attr)
    return {n for n in own if _private(n)}


def test_no_private_name_of_another_package_outside_the_fence():
    trees = {}
    for name, path in _modules().items():
        with open(path, encoding='utf-8') as f:
            trees[name] = ast.parse(f.read(), path)
    own = _own_names(trees)
    found = []
    for name, tree in trees.items():
        scan = _Scan(importlib.import_module(name), own)
        scan.visit(tree)
        found += scan.found
    assert found == [], (
        'private names of other packages outside mmdtm/upstream.py (add '
        'them to upstream.FENCED and go through it):\n' + '\n'.join(found))


def test_the_scan_sees_each_kind_of_use():
    """The scan finds an import, an attribute, a getattr string and an
    override of a foreign private name (so that its empty answer above
    means something)."""
    source = '''
from mmengine.runner.loops import _InfiniteDataloaderIterator
import torch._dynamo

class Hook(CheckpointHook):
    def _save_checkpoint_with_step(self, runner, step, meta):
        self.keep = runner._resume, getattr(runner, '_load_from')
'''
    fake = type(importlib)('mmdtm.fake_for_scan')
    fake.Hook = type('Hook', (CheckpointHook,), {})
    fake.Hook.__module__ = fake.__name__
    scan = _Scan(fake, own={'_own'})
    scan.visit(ast.parse(source))
    assert [f.split(': ', 1)[1] for f in scan.found] == [
        'from mmengine.runner.loops import _InfiniteDataloaderIterator',
        'import torch._dynamo',
        'overrides Hook._save_checkpoint_with_step',
        '._resume', '._load_from']
