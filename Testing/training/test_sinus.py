import numpy as np
from brainbarriers_training.phantom import generate_case
from brainbarriers_training.sinus import split_sinus

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _t_shape():
    """A T-shaped sinus: a midline tube along the top (sagittal) and a lateral bar at the back (transverse)."""
    lab = np.zeros((40, 40, 40), np.uint8)  # K (S), J (P), I (L); 2 mm voxels
    lab[30:33, 5:36, 19:21] = 3  # sagittal: top, along AP, midline
    lab[18:21, 34:37, 4:36] = 3  # transverse: lower, posterior, left-right
    lab[21:30, 34:36, 19:21] = 3  # descending part to the confluence
    lab[20:30, 8:30, 19:21] = 2  # falx
    return lab


def test_split_t_shape():
    lab = _t_shape()
    sag, trans = split_sinus(lab, IDENTITY, (2.0, 2.0, 2.0), slab_half_width_mm=6, margin_mm=2)
    np.testing.assert_array_equal(sag | trans, lab == 3)
    assert not (sag & trans).any()
    assert sag[31, 10, 19] and sag[31, 20, 20]  # the top midline tube
    assert trans[19, 35, 5] and trans[19, 35, 34]  # lateral bar
    assert trans[19, 35, 19]  # confluence (low midline) goes to the transverse part
    assert not sag[:21].any()


def test_split_follows_direction():
    """The same anatomy stored with flipped axes splits the same physical voxels."""
    lab = _t_shape()
    sag, _ = split_sinus(lab, IDENTITY, (2.0, 2.0, 2.0), 6, 2)
    flipped = lab[::-1, :, ::-1]  # array axis 0 now runs S->I, axis 2 L->R
    direction = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    sag_f, _ = split_sinus(flipped, direction, (2.0, 2.0, 2.0), 6, 2)
    np.testing.assert_array_equal(sag_f[::-1, :, ::-1], sag)


def test_split_on_phantom():
    import SimpleITK as sitk

    case = generate_case(3)
    lab = sitk.GetArrayFromImage(case.label)
    sag, trans = split_sinus(lab, case.label.GetDirection(), case.label.GetSpacing())
    assert sag.sum() > 100 and trans.sum() > 100
    ks, _, is_ = np.nonzero(sag)
    kt, _, it = np.nonzero(trans)
    assert np.ptp(is_) < np.ptp(it)  # transverse part spreads laterally
    assert np.median(ks) > np.median(kt)  # sagittal part higher


def test_split_empty():
    sag, trans = split_sinus(np.zeros((4, 4, 4), np.uint8), IDENTITY, (1, 1, 1))
    assert not sag.any() and not trans.any()
