"""The panel's .ui file: loads in Qt (PySide6, offscreen), holds every widget the code uses,
and renders (the PNG doubles as the extension's screenshot)."""

from __future__ import annotations

import ast
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
QtWidgets = pytest.importorskip("PySide6.QtWidgets")
from PySide6 import QtCore, QtGui  # noqa: E402
from PySide6.QtUiTools import QUiLoader  # noqa: E402

MODULE = Path(__file__).resolve().parents[2] / "SlicerBrainBarriers"
UI_FILE = MODULE / "Resources" / "UI" / "SlicerBrainBarriers.ui"
WIDGET_CODE = MODULE / "SlicerBrainBarriers.py"


def names_used_by_code() -> set[str]:
    """Every ``self.ui.<name>`` attribute the module's Python code reads."""
    names = set()
    for node in ast.walk(ast.parse(WIDGET_CODE.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui"
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "self"
        ):
            names.add(node.attr)
    return names


def ui_classes() -> dict[str, str]:
    """objectName -> class as written in the .ui (custom Slicer/CTK classes included)."""
    return {w.get("name"): w.get("class") for w in ET.parse(UI_FILE).iter("widget")}


@pytest.fixture(scope="module")
def app():
    return QtWidgets.QApplication.instance() or QtWidgets.QApplication([])


@pytest.fixture
def loaded(app):
    loader = QUiLoader()
    f = QtCore.QFile(str(UI_FILE))
    assert f.open(QtCore.QFile.ReadOnly)
    widget = loader.load(f)
    f.close()
    assert widget is not None, loader.errorString()
    return widget


def test_every_name_the_code_uses_is_in_the_ui(loaded):
    used = names_used_by_code()
    assert {"ctSelector", "t1Selector", "t2Selector", "applyButton", "installButton"} <= used  # the parser works
    missing = sorted(n for n in used if loaded.findChild(QtCore.QObject, n) is None)
    assert missing == []


def test_widget_kinds_and_defaults(loaded):
    classes = ui_classes()
    for name in ("ctSelector", "t1Selector", "t2Selector"):
        assert classes[name] == "qMRMLNodeComboBox"
        w = loaded.findChild(QtCore.QObject, name)
        assert list(w.property("nodeTypes")) == ["vtkMRMLScalarVolumeNode"]
        assert w.property("noneEnabled") is True
    out = loaded.findChild(QtCore.QObject, "outputSegmentationSelector")
    assert list(out.property("nodeTypes")) == ["vtkMRMLSegmentationNode"]
    assert out.property("noneDisplay") == "Create new"
    assert loaded.findChild(QtWidgets.QPushButton, "applyButton").text() == "Segment"
    assert loaded.findChild(QtCore.QObject, "logCollapsibleButton").property("collapsed") is True
    assert classes["logTextEdit"] == "QPlainTextEdit"


def _preview(widget) -> None:
    """Stand-ins for what Slicer draws inside its custom widgets (QUiLoader shows them blank)."""
    from brainbarriers.structures import OUTPUT_LABELS
    from SlicerBrainBarriersLib import devices, models, panel

    classes = ui_classes()
    examples = {"ctSelector": "sample_ct", "t1Selector": "sample_t1", "t2Selector": "sample_t2"}
    for name, cls in classes.items():
        w = widget.findChild(QtWidgets.QWidget, name)
        if cls == "qMRMLNodeComboBox":
            layout = QtWidgets.QHBoxLayout(w)
            layout.setContentsMargins(0, 0, 0, 0)
            combo = QtWidgets.QComboBox()
            combo.addItem(examples.get(name, w.property("noneDisplay")))
            layout.addWidget(combo)
        elif cls == "ctkCollapsibleButton":
            arrow = "\u25b8" if w.property("collapsed") else "\u25be"
            header = QtWidgets.QPushButton(f"{arrow} {w.property('text')}")
            header.setStyleSheet("text-align: left; font-weight: bold;")
            lay = w.layout()
            if isinstance(lay, QtWidgets.QFormLayout):
                lay.insertRow(0, header)
            else:
                lay.insertWidget(0, header)
            if w.property("collapsed"):
                for child in w.findChildren(QtWidgets.QWidget, options=QtCore.Qt.FindDirectChildrenOnly):
                    child.setVisible(child is header)
    structures = widget.findChild(QtWidgets.QListWidget, "structuresListWidget")
    for key, name, color in panel.structure_items():
        item = QtWidgets.QListWidgetItem(name)
        item.setData(QtCore.Qt.UserRole, key)
        item.setCheckState(QtCore.Qt.Checked)
        pix = QtGui.QPixmap(12, 12)
        pix.fill(QtGui.QColor(*color))
        item.setIcon(QtGui.QIcon(pix))
        structures.addItem(item)
    assert structures.count() == len(OUTPUT_LABELS)
    model_combo = widget.findChild(QtWidgets.QComboBox, "modelComboBox")
    entries = models.list_models()  # the real list: shipped bundles and the models index
    for entry in entries:
        model_combo.addItem(entry.label())
    widget.findChild(QtWidgets.QLabel, "modelInfoLabel").setText(entries[0].details())
    device_combo = widget.findChild(QtWidgets.QComboBox, "deviceComboBox")
    for choice in devices.device_choices(torch_module=_NoGpuTorch):
        device_combo.addItem(choice.label, choice.value)
    quality = widget.findChild(QtWidgets.QComboBox, "qualityComboBox")
    for value, label in panel.QUALITIES:
        quality.addItem(label, value)
    widget.findChild(QtWidgets.QProgressBar, "progressBar").setValue(40)
    widget.findChild(QtWidgets.QLabel, "progressLabel").setText("Segmenting structures (fine networks): ventricles")
    widget.findChild(QtWidgets.QLabel, "dependencyLabel").setText("Dependencies ready (torch 2.13.0).")
    widget.findChild(QtWidgets.QPushButton, "installButton").setVisible(False)


class _NoGpuTorch:
    class cuda:  # noqa: N801
        @staticmethod
        def is_available():
            return False

    class backends:  # noqa: N801
        mps = None


def test_panel_renders(loaded, tmp_path):
    _preview(loaded)
    loaded.show()
    QtWidgets.QApplication.processEvents()
    loaded.resize(460, loaded.sizeHint().height() + 10)
    QtWidgets.QApplication.processEvents()
    image = loaded.grab().toImage()
    path = tmp_path / "panel.png"
    assert image.save(str(path))
    assert image.width() >= 440 and path.stat().st_size > 5000
    # not blank: many distinct colours
    colours = {image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)}
    assert len(colours) > 20
    target = os.environ.get("BRAINBARRIERS_SCREENSHOT")
    if target:  # regenerate Resources/Screenshots/panel.png on request
        assert image.save(target)
