"""Import a script under tools/ as a module (tools/ is not a package)."""
import importlib.util
import os.path as osp

from ..conftest import REPO

TOOLS = osp.join(REPO, 'tools')


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(
        f'mmdtm_tools_{name}', osp.join(TOOLS, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
