"""A Slicer-faithful harness: runs the module's real files (SlicerBrainBarriers.py, its .ui) the way
Slicer 5.10 runs them, without a Slicer binary.

What it is made of:
- ``qt``: PySide6 (offscreen) with PythonQt's conventions (Qt properties as attributes,
  ``obj.connect("signal(args)", slot)``, ``name``, ``exec_``), see :mod:`.pythonqt`;
- ``slicer``: the real slicer-core wheel (real MRML, Segmentations, SubjectHierarchy, and Slicer's
  own ``slicer.util``), completed with what the application adds: ``slicer.app`` (event loop,
  testing mode, override cursor, module manager, core IO manager reading volumes through MRML
  storage nodes, settings), ``slicer.mrmlScene``, ``slicer.modules``,
  ``slicer.ScriptedLoadableModule`` (:mod:`.scripted`), ``slicer.parameterNodeWrapper``
  (:mod:`.parameter_node`), stand-ins for qMRMLWidget, qMRMLNodeComboBox, ctkCollapsibleButton,
  ctkPathLineEdit and the Segment Editor widget (:mod:`.widgets`), a ``SampleData`` module whose
  registered sources are fetched from their URIs, checked against their SHA-256 and loaded, and
  ``slicer.dicomDatabase`` with ``DICOMLib.DICOMUtils.importDicom`` and the DICOM browser's
  scalar-volume loading (:mod:`.dicom`);
- ``slicer.util.loadUI`` builds the panel with QUiLoader from those classes and makes the .ui's
  ``mrmlSceneChanged(vtkMRMLScene*)`` connections as Slicer's loader does;
- a *user* (:class:`User`) answers dialogs from a queue and records them; a dialog nobody expected
  fails the test instead of blocking.

What it does not reproduce (only a real Slicer binary shows these): the C++ module manager and
module discovery from the extension's install tree; PythonQt's own type conversions beyond the
conventions above (e.g. C++-created objects that never passed through ``qt`` keep PySide6's API);
the real ctk/qMRML widgets' look; slice and 3D views and their layout manager (``layoutManager()``
is None, as with ``--no-main-window``); rendering of segmentations; PyTorchUtils; pip inside
Slicer's Python; Slicer's launcher environment; Windows and macOS process handling.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
import types
import urllib.parse
import urllib.request
from collections import deque
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6 import QtCore, QtWidgets  # noqa: E402

from . import dicom, pythonqt, widgets  # noqa: E402

SLICER_VERSION = "5.10.0"


class UnexpectedDialog(AssertionError):
    pass


class User:
    """Answers the dialogs the module opens, in order; records every one of them."""

    def __init__(self):
        self.answers: deque = deque()
        self.seen: list[tuple[str, str]] = []  # (kind, text)

    def will(self, *answers):
        self.answers.extend(answers)

    def answer(self, kind: str, text: str):
        self.seen.append((kind, text))
        if not self.answers:
            raise UnexpectedDialog(f"unexpected {kind} dialog: {text}")
        return self.answers.popleft()


class Harness:
    """Handle returned by :func:`install`; tests use it to drive the application."""

    def __init__(self):
        self.user = User()
        self.slot_errors: list[BaseException] = []
        self.current_module: str | None = None
        self.home = Path(tempfile.mkdtemp(prefix="SlicerHarness-"))
        self.view_calls: list[tuple] = []
        self.loaded: list[str] = []

    def process_events(self, seconds: float = 0.0):
        """Turn the Qt event loop (timers fire, slots run) for ``seconds``."""
        deadline = QtCore.QDeadlineTimer(int(seconds * 1000))
        QtWidgets.QApplication.processEvents()
        while not deadline.hasExpired():
            QtWidgets.QApplication.processEvents(QtCore.QEventLoop.AllEvents, 20)
            QtCore.QThread.msleep(5)
        self.raise_slot_errors()

    def wait_until(self, condition, timeout: float = 60.0, what: str = "condition"):
        deadline = QtCore.QDeadlineTimer(int(timeout * 1000))
        while not condition():
            if deadline.hasExpired():
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
            QtWidgets.QApplication.processEvents(QtCore.QEventLoop.AllEvents, 20)
            QtCore.QThread.msleep(5)
            self.raise_slot_errors()

    def raise_slot_errors(self):
        if self.slot_errors:
            error, self.slot_errors[:] = self.slot_errors[0], []
            raise AssertionError(f"a Qt slot raised: {error!r}") from error

    def new_scene(self):
        """Close the scene as File > Close Scene does (same scene object, nodes removed)."""
        import slicer

        slicer.mrmlScene.Clear(0)

    def load_module(self, module_file: str | Path):
        """Discover a scripted module file as Slicer's module factory does; returns the module object."""
        return _load_scripted_module(self, Path(module_file))

    def load_dicom(self, folder: str | Path, copy_files: bool = False) -> list:
        """Import a folder into the DICOM database and load its series, as the DICOM browser does."""
        import DICOMLib
        import pydicom
        import slicer

        if not DICOMLib.DICOMUtils.importDicom(str(folder), slicer.dicomDatabase, copy_files):
            raise ValueError(f"could not import {folder}")
        series = []
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                uid = str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)
                if uid not in series:
                    series.append(uid)
        return [dicom.load_series(uid) for uid in series]

    def select_module(self, name: str):
        import slicer

        slicer.util.selectModule(name)
        return getattr(slicer.modules, f"{name}Widget", None)


_HARNESS: Harness | None = None
_SAVED: dict = {}
_SLICER_ADDED = ("mrmlScene", "app", "modules", "qMRMLWidget", "qMRMLNodeComboBox", "qMRMLSegmentEditorWidget",
                 "ScriptedLoadableModule", "parameterNodeWrapper", "selfTests", "dicomDatabase")
_UTIL_PATCHED = ("loadUI", "messageBox", "delayDisplay", "selectModule", "setSliceViewerLayers", "pip_install", "mainWindow")


def install() -> Harness:
    """Make ``import qt``, ``import ctk``, ``import slicer`` (+ app parts) and ``import SampleData``
    behave as inside Slicer 5.10; idempotent."""
    global _HARNESS
    if _HARNESS is not None:
        return _HARNESS
    harness = Harness()
    import slicer.util

    _SAVED["modules"] = {k: sys.modules.get(k) for k in ("qt", "ctk", "slicer.ScriptedLoadableModule",
                                                          "slicer.parameterNodeWrapper", "SampleData", "DICOMLib")}
    _SAVED["util"] = {k: getattr(slicer.util, k) for k in _UTIL_PATCHED}
    _SAVED["excepthook"] = sys.excepthook
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["SlicerHarness"])
    app.setApplicationName("Slicer")

    qt = _qt_module(harness)
    sys.modules["qt"] = qt
    ctk = types.ModuleType("ctk")
    ctk.ctkCollapsibleButton = widgets.ctkCollapsibleButton
    ctk.ctkPathLineEdit = widgets.ctkPathLineEdit
    sys.modules["ctk"] = ctk

    import slicer
    import slicer.util
    import vtk

    slicer.mrmlScene = slicer.vtkMRMLScene()
    _prepare_scene(slicer.mrmlScene)
    slicer.app = _application(harness, app)
    slicer.modules = types.SimpleNamespace()
    slicer.qMRMLWidget = widgets.qMRMLWidget
    slicer.qMRMLNodeComboBox = widgets.qMRMLNodeComboBox
    slicer.qMRMLSegmentEditorWidget = widgets.qMRMLSegmentEditorWidget
    from . import parameter_node, scripted

    sys.modules["slicer.ScriptedLoadableModule"] = scripted
    slicer.ScriptedLoadableModule = scripted
    pnw = types.ModuleType("slicer.parameterNodeWrapper")
    pnw.parameterNodeWrapper = parameter_node.parameterNodeWrapper
    sys.modules["slicer.parameterNodeWrapper"] = pnw
    slicer.parameterNodeWrapper = parameter_node.parameterNodeWrapper
    _patch_util(harness, slicer.util, slicer, vtk)
    sys.modules["SampleData"] = _sample_data_module(harness)
    slicer.dicomDatabase = dicom.DICOMDatabase(harness.home / "DICOM")  # the DICOM module opens it at startup
    sys.modules["DICOMLib"] = dicom.dicomlib_module(lambda: slicer.dicomDatabase)
    _segment_editor(harness, slicer)
    def excepthook(kind, value, tb):  # PySide6 reports exceptions raised in slots here
        harness.slot_errors.append(value)
        sys.__excepthook__(kind, value, tb)

    sys.excepthook = excepthook
    _HARNESS = harness
    return harness


def uninstall() -> None:
    """Undo :func:`install` (other tests in the same process see plain slicer-core again)."""
    global _HARNESS
    if _HARNESS is None:
        return
    import slicer
    import slicer.util

    for name, module in _SAVED["modules"].items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module
    for name, value in _SAVED["util"].items():
        setattr(slicer.util, name, value)
    for name in _SLICER_ADDED:
        if hasattr(slicer, name):
            delattr(slicer, name)
    sys.excepthook = _SAVED["excepthook"]
    for name in _HARNESS.loaded:
        sys.modules.pop(name, None)
    shutil.rmtree(_HARNESS.home, ignore_errors=True)
    _HARNESS = None


# --- qt ----------------------------------------------------------------------------------------
def _qt_module(harness: Harness):
    qt = pythonqt.build_module({})

    class QUiLoader(pythonqt.UiLoader):
        def __init__(self, parent=None):
            super().__init__(dict(widgets.CUSTOM_WIDGETS))

    class QMessageBox(pythonqt.pythonqt_class(QtWidgets.QMessageBox)):
        def exec(self):  # the user reads the text and clicks the button with the answered text
            wanted = harness.user.answer("message box", QtWidgets.QMessageBox.text(self))
            for button in self.buttons():
                if button.text() == wanted:
                    self._clicked = button
                    return 0
            raise UnexpectedDialog(f"no button {wanted!r} in dialog {QtWidgets.QMessageBox.text(self)!r}")

        def clickedButton(self):  # noqa: N802
            return getattr(self, "_clicked", None)

    class QFileDialog(pythonqt.pythonqt_class(QtWidgets.QFileDialog)):
        @staticmethod
        def getExistingDirectory(*args, **kwargs):  # noqa: N802
            return harness.user.answer("choose folder", str(args[1:2]))

        @staticmethod
        def getOpenFileName(*args, **kwargs):  # noqa: N802
            return harness.user.answer("open file", str(args[1:2]))

    qt.QUiLoader = QUiLoader
    qt.QMessageBox = QMessageBox
    qt.QFileDialog = QFileDialog
    return qt


# --- slicer.app -------------------------------------------------------------------------------
class _ModuleManager(pythonqt.PythonQtObject, QtCore.QObject):
    moduleAboutToBeUnloaded = QtCore.Signal(str)
    _pythonqt_signals = {"moduleAboutToBeUnloaded(QString)": "moduleAboutToBeUnloaded"}


class _CoreIOManager:
    """Reads volumes through MRML storage nodes, as the Volumes reader of the real IO manager."""

    def fileType(self, filename):  # noqa: N802
        return "VolumeFile"

    def loadNodes(self, filetype, properties, loaded=None, messages=None):  # noqa: N802
        import slicer

        if filetype != "VolumeFile":
            raise NotImplementedError(f"the harness reads volumes only, not {filetype}")
        path = properties["fileName"]
        labelmap = bool(properties.get("labelmap"))
        name = properties.get("name") or Path(path).name.split(".")[0]
        node = slicer.mrmlScene.AddNewNodeByClass(
            "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", slicer.mrmlScene.GenerateUniqueName(name))
        storage = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        storage.SetFileName(str(path))
        node.SetAndObserveStorageNodeID(storage.GetID())
        if not storage.ReadData(node):
            slicer.mrmlScene.RemoveNode(node)
            slicer.mrmlScene.RemoveNode(storage)
            return False
        node.CreateDefaultDisplayNodes()
        if loaded is not None:
            loaded.AddItem(node)
        return True


class _Application(pythonqt.PythonQtObject, QtCore.QObject):
    startupCompleted = QtCore.Signal()
    _pythonqt_signals = {"startupCompleted()": "startupCompleted"}

    def __init__(self, harness, qapp):
        super().__init__()
        self._harness = harness
        self._qapp = qapp
        self._manager = _ModuleManager()
        self._io = _CoreIOManager()
        self._testing = False
        self._cursor_depth = 0
        home = harness.home / f"Slicer-{SLICER_VERSION}"
        (home / "bin").mkdir(parents=True, exist_ok=True)
        self._home = home
        launcher = home / "bin" / "PythonSlicer"  # Slicer's Python launcher: here, this interpreter
        launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n', encoding="utf-8")
        launcher.chmod(0o755)
        self._settings = QtCore.QSettings(str(harness.home / "settings.ini"), QtCore.QSettings.IniFormat)

    applicationName = "Slicer"
    applicationVersion = SLICER_VERSION
    majorVersion, minorVersion = (int(x) for x in SLICER_VERSION.split(".")[:2])

    @property
    def slicerHome(self):  # noqa: N802
        return str(self._home)

    @property
    def temporaryPath(self):  # noqa: N802
        path = self._harness.home / "tmp"
        path.mkdir(exist_ok=True)
        return str(path)

    @property
    def cachePath(self):  # noqa: N802
        path = self._harness.home / "cache"
        path.mkdir(exist_ok=True)
        return str(path)

    def testingEnabled(self):  # noqa: N802
        return self._testing

    def setTestingEnabled(self, enabled):  # noqa: N802
        self._testing = bool(enabled)

    def processEvents(self, *args):  # noqa: N802
        self._qapp.processEvents(*args)

    def setOverrideCursor(self, cursor):  # noqa: N802
        self._cursor_depth += 1

    def restoreOverrideCursor(self):  # noqa: N802
        self._cursor_depth -= 1

    def overrideCursorDepth(self):  # noqa: N802 (harness helper)
        return self._cursor_depth

    def moduleManager(self):  # noqa: N802
        return self._manager

    def coreIOManager(self):  # noqa: N802
        return self._io

    def layoutManager(self):  # noqa: N802
        return None  # no views: as Slicer started with --no-main-window

    def topLevelWidgets(self):  # noqa: N802
        return self._qapp.topLevelWidgets()

    def settings(self):
        return self._settings

    def userSettings(self):  # noqa: N802
        return self._settings

    def commandOptions(self):  # noqa: N802
        return types.SimpleNamespace(noMainWindow=True)


def _application(harness, qapp):
    return _Application(harness, qapp)


def _prepare_scene(scene):
    import slicer

    # Slicer's application logic registers the segmentation converter rules and creates the
    # subject hierarchy node for every scene; the Segmentations logic does both here.
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    _prepare_scene.keep = logic
    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)


# --- slicer.util ------------------------------------------------------------------------------
def _patch_util(harness, util, slicer, vtk):
    def loadUI(path):  # noqa: N802
        if not os.path.isfile(str(path)):
            raise RuntimeError(f"Could not load UI file: file not found {path}\n\n")
        text, python_connections = _split_connections(Path(path).read_text(encoding="utf-8"))
        buffer = QtCore.QBuffer()
        buffer.setData(text.encode("utf-8"))
        buffer.open(QtCore.QIODevice.ReadOnly)
        import qt

        widget = qt.QUiLoader().load(buffer)
        if not widget:
            raise RuntimeError(f"Could not load UI file: {path}\n\n")
        _connect(widget, python_connections)
        return widget

    def messageBox(text, parent=None, **kwargs):  # noqa: N802
        import qt

        if slicer.app.testingEnabled():
            logging.info(f"Testing mode is enabled: message box [{text}]")
            return qt.QMessageBox.Ok
        detailed = kwargs.get("detailedText")
        answer = harness.user.answer("message", text + (f"\n{detailed}" if detailed else ""))
        buttons = kwargs.get("standardButtons", qt.QMessageBox.Ok)
        if answer is True:
            return qt.QMessageBox.Ok if buttons & qt.QMessageBox.Ok else qt.QMessageBox.Yes
        if answer is False:
            return qt.QMessageBox.Cancel if buttons & qt.QMessageBox.Cancel else qt.QMessageBox.No
        return answer

    def delayDisplay(message, autoCloseMsec=1000, parent=None, **kwargs):  # noqa: N802
        logging.info(message)
        slicer.app.processEvents()

    def selectModule(module):  # noqa: N802
        name = module if isinstance(module, str) else module.name
        harness.current_module = name
        widget = getattr(slicer.modules, f"{name}Widget", None)
        if widget is not None and hasattr(widget, "enter"):
            widget.enter()

    def setSliceViewerLayers(background="keep-current", foreground="keep-current", label="keep-current", fit=False, **kwargs):  # noqa: N802
        harness.view_calls.append(("setSliceViewerLayers", background, fit))

    def pip_install(requirements, **kwargs):
        raise RuntimeError("pip_install would change Slicer's Python: not available in the harness")

    util.loadUI = loadUI
    util.messageBox = messageBox
    util.delayDisplay = delayDisplay
    util.selectModule = selectModule
    util.setSliceViewerLayers = setSliceViewerLayers
    util.pip_install = pip_install
    util.mainWindow = lambda: None


def _split_connections(text: str):
    """The .ui without the connections whose signals carry MRML objects, and those connections
    (QUiLoader cannot make them; Slicer's loader, built on PythonQt-aware Qt, does)."""
    import xml.etree.ElementTree as ET

    python_signals = {sig for cls in widgets.CUSTOM_WIDGETS.values() for sig in cls._pythonqt_signals}
    root = ET.fromstring(text)
    taken = []
    for connections in root.iter("connections"):
        for connection in list(connections):
            if pythonqt._normalise(connection.findtext("signal")) in python_signals:
                taken.append(tuple(connection.findtext(k) for k in ("sender", "signal", "receiver", "slot")))
                connections.remove(connection)
    return ET.tostring(root, encoding="unicode"), taken


def _connect(root, connections):
    def find(name):
        return root if QtCore.QObject.objectName(root) == name else root.findChild(QtCore.QObject, name)

    for sender_name, signal, receiver_name, slot in connections:
        sender, receiver = find(sender_name), find(receiver_name)
        if sender is None or receiver is None:
            logging.warning(f"QObject::connect: no {sender_name} or {receiver_name} for {signal}")
            continue
        sender._pythonqt_signal(signal).connect(getattr(receiver, slot.split("(")[0]))


# --- modules ----------------------------------------------------------------------------------
class _ModuleParent(pythonqt.PythonQtObject, QtCore.QObject):
    """What a scripted module's ``parent`` is: the C++ qSlicerScriptedLoadableModule."""

    def __init__(self, path, name):
        super().__init__()
        self.path = str(path)
        self.name = name
        self.title = ""
        self.icon = None
        self._widget = None
        self._widget_class = None

    def widgetRepresentation(self):  # noqa: N802
        import qt
        import slicer

        if self._widget is None:
            parent = slicer.qMRMLWidget()
            parent.setLayout(qt.QVBoxLayout())
            parent.setMRMLScene(slicer.mrmlScene)
            self._widget = self._widget_class(parent)
            self._widget.setup()
            setattr(slicer.modules, f"{self.name}Widget", self._widget)
        return self._widget.parent


def _load_scripted_module(harness, path: Path):
    import importlib.util

    import slicer

    name = path.stem
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))  # Slicer adds each module's folder to sys.path
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    harness.loaded.append(name)
    spec.loader.exec_module(module)
    parent = _ModuleParent(path, name)
    instance = getattr(module, name)(parent)
    parent._widget_class = getattr(module, f"{name}Widget", None)
    parent.instance = instance
    setattr(slicer.modules, name.lower(), parent)
    return parent


def _segment_editor(harness, slicer):
    parent = _ModuleParent(harness.home / "SegmentEditor.py", "SegmentEditor")
    slicer.modules.segmenteditor = parent
    slicer.modules.SegmentEditorWidget = types.SimpleNamespace(editor=widgets.qMRMLSegmentEditorWidget(), enter=lambda: None)


# --- SampleData -------------------------------------------------------------------------------
def _sample_data_module(harness):
    import slicer

    module = types.ModuleType("SampleData")

    class SampleDataSource:
        def __init__(self, sampleName=None, uris=None, fileNames=None, nodeNames=None, checksums=None,  # noqa: N803
                     thumbnailFileName=None, loadFileTypes=None, **kwargs):
            listify = lambda v: v if isinstance(v, list) else [v]  # noqa: E731
            self.sampleName = sampleName
            self.uris, self.fileNames, self.nodeNames = listify(uris), listify(fileNames), listify(nodeNames)
            self.checksums = listify(checksums) if checksums else [None] * len(self.uris)
            self.thumbnailFileName = thumbnailFileName

    class SampleDataLogic:
        @staticmethod
        def registerCustomSampleDataSource(category="Custom", sampleName=None, uris=None, fileNames=None,  # noqa: N802, N803
                                           nodeNames=None, customDownloader=None, thumbnailFileName=None,
                                           loadFileTypes=None, loadFiles=None, loadFileProperties=None, checksums=None,
                                           loadFileType=None):
            if not hasattr(slicer.modules, "sampleDataSources"):
                slicer.modules.sampleDataSources = {}
            source = SampleDataSource(sampleName=sampleName, uris=uris, fileNames=fileNames, nodeNames=nodeNames,
                                      checksums=checksums, thumbnailFileName=thumbnailFileName)
            slicer.modules.sampleDataSources.setdefault(category, []).append(source)

        def downloadSample(self, sampleName):  # noqa: N802, N803
            for sources in getattr(slicer.modules, "sampleDataSources", {}).values():
                for source in sources:
                    if source.sampleName == sampleName:
                        return self.downloadFromSource(source)
            raise ValueError(f"no sample named {sampleName!r}")

        def downloadFromSource(self, source):  # noqa: N802
            nodes = []
            for uri, file_name, node_name, checksum in zip(source.uris, source.fileNames, source.nodeNames, source.checksums):
                target = Path(slicer.app.cachePath) / file_name
                with urllib.request.urlopen(uri) as response, open(target, "wb") as out:
                    shutil.copyfileobj(response, out)
                if checksum:
                    algo, digest = checksum.split(":", 1)
                    if hashlib.new(algo.lower(), target.read_bytes()).hexdigest() != digest.lower():
                        raise ValueError(f"checksum mismatch for {file_name}")
                if node_name:
                    nodes.append(slicer.util.loadVolume(str(target), {"name": node_name}))
            return nodes

    def path2uri(path):
        return urllib.parse.urljoin("file:", urllib.request.pathname2url(str(path)))

    module.SampleDataSource = SampleDataSource
    module.SampleDataLogic = SampleDataLogic
    module.downloadSample = lambda name: SampleDataLogic().downloadSample(name)
    module.path2uri = path2uri
    return module
