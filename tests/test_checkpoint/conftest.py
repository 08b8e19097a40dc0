"""The tiny pre-training student the conversion and checked-loading tests
start from."""
import pytest
import torch

from tests.tiny_backbones import tiny_student


@pytest.fixture
def student():
    torch.manual_seed(0)
    return tiny_student()
