"""The module's About texts: version, licences and credits (THIRD_PARTY_NOTICES.md in short).

Kept out of the widget so the texts are tested without Slicer and the version has one source,
``brainbarriers.__version__``. The module class uses them as
``self.parent.acknowledgementText = about.acknowledgement_text()``.
"""

from __future__ import annotations

from brainbarriers import __version__

REPOSITORY = "https://github.com/SlicerBrainBarriers/SlicerBrainBarriers"
NOTICES_URL = f"{REPOSITORY}/blob/main/THIRD_PARTY_NOTICES.md"
PAPER_URL = "https://arxiv.org/abs/2206.02959"

#: (part, licence, note) as listed in THIRD_PARTY_NOTICES.md; the test checks the two agree.
LICENCES = (
    ("Code", "Apache License 2.0", "LICENSE.txt"),
    ("Demo model brainbarriers-demo", "CC BY-NC 4.0", "non-commercial use only; LICENSE next to the weights"),
    ("Sample case (InVesalius CT, SPM/MNI avg152 T1 and T2 templates)", "GPL-2.0",
     "Resources/SampleData/LICENSES"),
)


def version_text() -> str:
    return f"Brain Barriers {__version__}"


def acknowledgement_text() -> str:
    """HTML for the module's Acknowledgement section (Slicer shows it as rich text)."""
    licences = "".join(f"<li>{part}: {licence} ({note})</li>" for part, licence, note in LICENCES)
    return (
        f"<p>{version_text()}.</p>"
        f"<p>Method: HMRNet (Fu, Wang et al., <a href=\"{PAPER_URL}\">arXiv:2206.02959</a>). "
        "The bundled demo model was trained on one real-anatomy head (InVesalius CT with avg152 T1/T2 "
        "templates) and on heads drawn from its tissue map with random contrasts, with atlas- and "
        "anatomy-derived labels, to show the tool working; it is not for "
        "clinical use. Models trained on the ABCs MICCAI 2020 data can be imported as bundles.</p>"
        f"<p>Licences:</p><ul>{licences}</ul>"
        "<p>The demo model's training labels use SPM's Neuromorphometrics labelling: MRI scans originating "
        "from the OASIS project (http://www.oasis-brains.org/); labeled data provided by Neuromorphometrics, "
        "Inc. (http://Neuromorphometrics.com/) under academic subscription. The bundled demo model and "
        "sample case are for demonstration only, not for clinical use.</p>"
        f"<p>Full notices: <a href=\"{NOTICES_URL}\">THIRD_PARTY_NOTICES.md</a> (installed with the module in "
        "Resources/Licences).</p>"
    )
