import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "elukit", deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "elukit"))

try:  # pin torch to one thread: on the 2-core CI machine two threads were often far slower
    import torch

    torch.set_num_threads(1)
except ImportError:  # torch is an optional extra
    pass


@pytest.fixture(scope="session")
def bfloat16():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    return ml_dtypes.bfloat16
