"""A node whose GPUs torch cannot use (driver older than torch's CUDA
build) refuses at launch; a CPU machine, or GPUs hidden on purpose, does
not. The GPUs are faked: an ``nvidia-smi`` script on ``PATH``, a device
file pattern, ``CUDA_VISIBLE_DEVICES``."""
import os
import stat

import pytest
import torch

from mmdtm.engine import cuda_check
from mmdtm.engine.cuda_check import (CudaUnusableError, check_cuda_usable,
                                     example_index_tag)

from ..test_tools._load import load_tool

SMI = '''#!/bin/sh
if [ "$1" = "-L" ]; then
  echo "GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-0)"
  echo "GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-1)"
  exit 0
fi
cat <<'EOF'
+-----------------------------------------------------------------------+
| NVIDIA-SMI 535.104.05   Driver Version: 535.104.05   CUDA Version: 12.2 |
+-----------------------------------------------------------------------+
EOF
'''


@pytest.fixture
def gpu_node(tmp_path, monkeypatch):
    """This CPU machine dressed as a GPU node with a CUDA 12.2 driver."""
    if torch.cuda.is_available():
        pytest.skip('torch can use CUDA here: nothing to refuse')
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    smi = bin_dir / 'nvidia-smi'
    smi.write_text(SMI)
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
    monkeypatch.setattr(cuda_check, 'DEV_GLOB', str(tmp_path / 'nvidia[0-9]*'))
    return tmp_path


@pytest.fixture
def cpu_machine(tmp_path, monkeypatch):
    """No nvidia-smi, no device files, no CUDA_VISIBLE_DEVICES."""
    monkeypatch.setenv('PATH', str(tmp_path / 'empty'))
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
    monkeypatch.setattr(cuda_check, 'DEV_GLOB', str(tmp_path / 'nvidia[0-9]*'))


def test_visible_but_unusable_gpus_refuse_with_versions_and_fix(gpu_node):
    with pytest.raises(CudaUnusableError) as err:
        check_cuda_usable()
    msg = str(err.value)
    assert 'nvidia-smi -L lists 2 GPU(s)' in msg
    assert 'supports CUDA up to 12.2' in msg
    build = torch.version.cuda
    assert (f'built for CUDA {build}' if build else 'CPU-only build') in msg
    assert torch.__version__ in msg
    assert 'https://download.pytorch.org/whl/cu121' in msg
    assert 'KEEP_TORCH=1' in msg and 'CUDA_VISIBLE_DEVICES=' in msg
    assert 'Refusing to start' in msg


@pytest.mark.parametrize('signal', ['dev', 'cvd'])
def test_other_gpu_signals_refuse(gpu_node, monkeypatch, signal):
    """Without nvidia-smi: a /dev/nvidia<N> file or CUDA_VISIBLE_DEVICES."""
    monkeypatch.setenv('PATH', str(gpu_node / 'empty'))
    if signal == 'dev':
        (gpu_node / 'nvidia0').write_text('')
    else:
        monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '0,1')
    with pytest.raises(CudaUnusableError) as err:
        check_cuda_usable()
    msg = str(err.value)
    assert (f'{gpu_node / "nvidia0"} exist' if signal == 'dev'
            else 'CUDA_VISIBLE_DEVICES=0,1') in msg
    assert "driver's CUDA version is unknown" in msg


@pytest.mark.parametrize('hidden', ['', '-1'])
def test_gpus_hidden_on_purpose_take_the_cpu_path(gpu_node, monkeypatch,
                                                  hidden):
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', hidden)
    assert check_cuda_usable() is None


def test_cpu_machine_passes(cpu_machine):
    assert check_cuda_usable() is None


def test_train_tool_refuses_before_building_anything(gpu_node, tmp_path):
    """tools/train.py stops at launch, before the config is even read."""
    train = load_tool('train')
    with pytest.raises(CudaUnusableError, match='supports CUDA up to 12.2'):
        train.main([str(tmp_path / 'no_such_config.py')])


def test_example_index_tag():
    assert example_index_tag('12.2') == 'cu121'
    assert example_index_tag('12.4') == 'cu124'
    assert example_index_tag('13.1') == 'cu130'
    assert example_index_tag('11.4') == 'cu118'
    assert example_index_tag(None) == 'cu118'
