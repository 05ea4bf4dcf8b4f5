"""Normalisation must not depend on the last bits of floating point."""

import numpy as np
from brainbarriers.preprocessing import normalise


def test_background_rounding_noise_does_not_change_the_normalisation():
    rng = np.random.default_rng(0)
    head = np.zeros((20, 20, 20), np.float32)
    head[5:15, 5:15, 5:15] = rng.uniform(100, 300, (10, 10, 10))
    # what linear resampling onto the same grid gives: background at the minimum plus 1e-13 noise
    noisy = head + rng.uniform(0, 1e-12, head.shape).astype(np.float32) * (head == 0)
    for scheme in ({}, {"percentiles": [1, 99]}):
        np.testing.assert_allclose(normalise(noisy, "t1", scheme), normalise(head, "t1", scheme), atol=1e-5)
    z = normalise(head, "t1")
    assert abs(float(z[5:15, 5:15, 5:15].mean())) < 1e-4  # z-scored over the head, not the background
