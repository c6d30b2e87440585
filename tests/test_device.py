import pytest
import torch

from econsg.device import check_backend, resolve_device
from econsg.errors import EconsgError


def test_auto_picks_what_is_present():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(EconsgError, match="'cuda:0' requested but CUDA is not available"):
        resolve_device("cuda:0")


def test_unknown_device_names_the_choices():
    with pytest.raises(EconsgError, match="expected 'auto', 'cpu' or 'cuda"):
        resolve_device("tpu")


def test_gsplat_off_cuda_is_refused_naming_the_param():
    check_backend("gsplat", "cuda:0")
    for backend in ("auto", "torch"):
        check_backend(backend, "cpu")
    with pytest.raises(EconsgError, match=r"splat.backend: 'gsplat' needs a CUDA device, but device resolves to 'cpu'"):
        check_backend("gsplat", "cpu")
