import time

import pytest
import torch

from econsg.device import check_backend, median_seconds, resolve_device
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


def test_median_seconds_warms_up_untimed_and_a_preempted_repeat_does_not_pull_the_figure():
    calls = []

    def work(r: int):
        calls.append(r)
        time.sleep(0.5 if r in (-1, 1) else 0.01)  # the warm-up and one repeat are slow

    seconds = median_seconds(work, 3, "cpu")
    assert calls == [-1, 0, 1, 2]
    assert 0.01 <= seconds < 0.1  # a mean over the repeats would read 0.17 at least, with the warm-up 0.26
