"""The panel's .ui file: loads in plain Qt (PySide6, offscreen) and holds every widget the code uses.
The panel as Slicer shows it, and the screenshot, come from the harness (test_slicer_module.py)."""

from __future__ import annotations

import ast
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
QtWidgets = pytest.importorskip("PySide6.QtWidgets")
from PySide6 import QtCore  # noqa: E402
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


def test_dicom_export_section(loaded):
    classes = ui_classes()
    assert classes["dicomExportCollapsibleButton"] == "ctkCollapsibleButton"
    assert classes["dicomFolderPathLineEdit"] == "ctkPathLineEdit"
    for name in ("dicomSegCheckBox", "rtstructCheckBox"):
        assert loaded.findChild(QtWidgets.QCheckBox, name).isChecked()
    assert not loaded.findChild(QtWidgets.QCheckBox, "addToDatabaseCheckBox").isChecked()
    assert not loaded.findChild(QtWidgets.QPushButton, "exportDicomButton").isEnabled()  # until a DICOM input
