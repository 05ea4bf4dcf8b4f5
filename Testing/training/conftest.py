import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from training_helpers import make_prepared  # noqa: E402


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """A prepared set of four 64^3 phantoms: (data, cache, index)."""
    return make_prepared(tmp_path_factory.mktemp("phantoms"))
