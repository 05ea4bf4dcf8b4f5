"""Anatomical checks of a segmentation where no independent label exists (heads in MNI pose).

Used for the demo model's real test heads (Testing/demo/test_heldout_heads.py asserts on these
figures; ``scripts/heldout_report.py`` prints them). Coordinates are LPS mm in MNI pose, so the
midline is x = 0; a head in another pose comes with the affine that maps MNI points into it
(``<case>_mni.tfm``, scripts/build_heldout.py), and its points are carried into MNI pose first.
``lateral_ventricles`` is an independent label of the lateral ventricles
(scripts/build_heldout.py); its roof stands in for the corpus callosum.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from brainbarriers.structures import OUTPUT_LABELS
from scipy import ndimage

LABEL = {lab.key: lab.value for lab in OUTPUT_LABELS}
MIDLINE_GAP_MM = 3.0  # voxels closer to the midline count for neither side
VERTEX_ABOVE_ROOF_MM = 10.0  # sinus voxels this far above the ventricles' roof: the vertex part


def lps_points(image: sitk.Image, mask: np.ndarray, to_image: sitk.Transform | None = None) -> np.ndarray:
    """LPS coordinates (mm) of the voxels of ``mask`` (numpy K, J, I order), shape (N, 3);
    with ``to_image`` (an affine mapping MNI points into the image) in MNI pose."""
    ijk = np.argwhere(mask)[:, ::-1].astype(float)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    points = np.array(image.GetOrigin()) + (ijk * np.array(image.GetSpacing())) @ direction.T
    if to_image is None:
        return points
    matrix = np.array(to_image.GetMatrix()).reshape(3, 3)
    centre, shift = np.array(to_image.GetCenter()), np.array(to_image.GetTranslation())
    # image point p = A (m - c) + c + t  =>  MNI point m = A^-1 (p - c - t) + c
    return (points - centre - shift) @ np.linalg.inv(matrix).T + centre


def head_extent(image: sitk.Image, to_image: sitk.Transform | None = None) -> tuple[np.ndarray, np.ndarray]:
    """LPS bounding box of the head: the largest component above the image's Otsu threshold."""
    head = sitk.RelabelComponent(sitk.ConnectedComponent(sitk.OtsuThreshold(image, 0, 1)), sortByObjectSize=True) == 1
    points = lps_points(image, sitk.GetArrayFromImage(head).astype(bool), to_image)
    return points.min(axis=0), points.max(axis=0)


def anatomy_report(labels: sitk.Image, image: sitk.Image, lateral_ventricles: np.ndarray,
                   to_image: sitk.Transform | None = None,
                   cerebellum_label: np.ndarray | None = None) -> dict[str, float]:
    """Figures of one segmented head (``labels`` on the grid of ``image`` and of the ventricle mask;
    ``to_image``: the MNI -> image affine of a head not in MNI pose; ``cerebellum_label``: an
    independent cerebellum mask, when the head has one, for the share of it that was found).

    Fractions are of the head's bounding box: x 0 right .. 1 left, y 0 anterior .. 1 posterior,
    z 0 inferior .. 1 superior.
    """
    array = sitk.GetArrayFromImage(labels)
    voxel_ml = float(np.prod(labels.GetSpacing())) / 1000.0
    lo, hi = head_extent(image, to_image)
    size = hi - lo
    out: dict[str, float] = {}

    cerebellum = array == LABEL["cerebellum"]
    out["cerebellum_ml"] = cerebellum.sum() * voxel_ml
    if cerebellum.any():
        centre = (np.median(lps_points(labels, cerebellum, to_image), axis=0) - lo) / size
        out.update(cerebellum_x=centre[0], cerebellum_y=centre[1], cerebellum_z=centre[2])

    ventricles = lps_points(labels, lateral_ventricles, to_image)
    found = (array == LABEL["ventricles"])[lateral_ventricles]  # same voxel order as the points
    for side, sign in (("right", -1), ("left", 1)):
        on_side = sign * ventricles[:, 0] > MIDLINE_GAP_MM
        out[f"{side}_lateral_ventricle_found_ml"] = float((on_side & found).sum() * voxel_ml)
        out[f"{side}_lateral_ventricle_label_ml"] = float(on_side.sum() * voxel_ml)

    falx = lps_points(labels, array == LABEL["falx"], to_image)
    roof = float(ventricles[:, 2].max())
    if len(falx):
        ap = (falx[:, 1] - lo[1]) / size[1]
        out.update(falx_front=float(np.percentile(ap, 2)), falx_back=float(np.percentile(ap, 98)),
                   falx_on_midline=float(np.mean(np.abs(falx[:, 0]) <= 6.0)))
        front, back = np.percentile(ventricles[:, 1], [35, 65])
        over = falx[(falx[:, 1] >= front) & (falx[:, 1] <= back)]
        # height of the falx's lower edge over the ventricle bodies above their roof (mm)
        out["falx_edge_above_roof_mm"] = float(np.percentile(over[:, 2], 5) - roof) if len(over) else float("nan")

    vertex = array == LABEL["sinuses"]
    vertex[vertex] = lps_points(labels, vertex, to_image)[:, 2] > roof + VERTEX_ABOVE_ROOF_MM
    components, count = ndimage.label(vertex, structure=np.ones((3, 3, 3)))
    out["vertex_sinus_components"] = float(count)
    if count:
        sizes = np.bincount(components.ravel())[1:]
        out["vertex_sinus_largest_fraction"] = float(sizes.max() / vertex.sum())
        largest = lps_points(labels, components == np.argmax(sizes) + 1, to_image)
        out["vertex_sinus_span"] = float((largest[:, 1].max() - largest[:, 1].min()) / size[1])
    if cerebellum_label is not None and cerebellum_label.any():
        out["cerebellum_label_covered"] = float(cerebellum[cerebellum_label].mean())
    return out


def read_mni_transform(folder: Path, case: str) -> sitk.Transform | None:
    """The case's MNI -> image affine (``<case>_mni.tfm``), or None for a head in MNI pose."""
    path = Path(folder) / f"{case}_mni.tfm"
    return sitk.ReadTransform(str(path)) if path.exists() else None


def _cerebellum_placed(r: dict) -> bool:
    return (60 <= r["cerebellum_ml"] <= 260 and r["cerebellum_y"] > 0.55 and r["cerebellum_z"] < 0.45
            and abs(r["cerebellum_x"] - 0.5) < 0.1)


def _both_lateral_ventricles(r: dict) -> bool:
    # more than half of each side's label, and at least 2 ml of it
    return all(r[f"{side}_lateral_ventricle_found_ml"] >= 2.0
               and r[f"{side}_lateral_ventricle_found_ml"] > 0.5 * r[f"{side}_lateral_ventricle_label_ml"]
               for side in ("right", "left"))


#: The demo issue's checks on a real head, by name, on the unrounded figures of :func:`anatomy_report`:
#: Testing/demo/test_heldout_heads.py asserts them and ``scripts/judge_demo_candidate.py`` compares a
#: candidate's with the shipped model's. A missing figure (no falx, no sinus) fails its check.
HEAD_CHECKS = {
    "cerebellum": _cerebellum_placed,
    "ventricles": _both_lateral_ventricles,
    # from the frontal to the occipital pole, as a midline sheet
    "falx": lambda r: r["falx_front"] < 0.3 and r["falx_back"] > 0.7 and r["falx_on_midline"] > 0.9,
    # over the ventricle bodies, the falx's lower edge stays above their roof (the corpus callosum)
    "falx_edge": lambda r: r["falx_edge_above_roof_mm"] > 0,
    # one structure along the vertex, not scattered blobs and not a blob
    "sagittal_sinus": lambda r: (r["vertex_sinus_components"] >= 1 and r["vertex_sinus_largest_fraction"] >= 0.9
                                 and r["vertex_sinus_span"] > 0.4),
}


def head_checks(report: dict) -> dict[str, bool]:
    """Each of :data:`HEAD_CHECKS` met (True) or not on one head's report."""
    out = {}
    for name, check in HEAD_CHECKS.items():
        try:
            out[name] = bool(check(report))
        except KeyError:  # the structure was not found at all
            out[name] = False
    return out
