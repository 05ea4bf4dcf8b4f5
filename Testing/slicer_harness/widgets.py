"""Stand-ins for the CTK/MRML widgets of Slicer that PySide6 cannot create.

Each keeps the API and behaviour the module and its .ui rely on (checked against the C++ classes'
documented behaviour): qMRMLWidget forwards its scene through ``mrmlSceneChanged``;
qMRMLNodeComboBox lists the scene's nodes of ``nodeTypes`` (exact classes unless
``showChildNodeTypes``; ``HideFromEditors`` nodes hidden), keeps "None" selected when
``noneEnabled`` and otherwise selects the first node, follows nodes added and removed, and emits
``currentNodeChanged``; ctkCollapsibleButton is a header button that hides its contents when
``collapsed``; ctkPathLineEdit holds a path typed or chosen with its browse button (a folder dialog
when ``filters`` has ``Dirs``) and emits ``currentPathChanged``.
"""

from __future__ import annotations

import weakref

import shiboken6
from PySide6 import QtCore, QtGui, QtWidgets
from PySide6.QtCore import Property, Signal

from .pythonqt import PythonQtObject


class qMRMLWidget(PythonQtObject, QtWidgets.QWidget):  # noqa: N801 (Slicer's class name)
    mrmlSceneChanged = Signal(object)
    _pythonqt_signals = {"mrmlSceneChanged(vtkMRMLScene*)": "mrmlSceneChanged"}

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None

    def setMRMLScene(self, scene):  # noqa: N802
        if scene is self._scene:
            return
        self._scene = scene
        self.mrmlSceneChanged.emit(scene)

    def mrmlScene(self):  # noqa: N802
        return self._scene


class qMRMLNodeComboBox(PythonQtObject, QtWidgets.QWidget):  # noqa: N801
    currentNodeChanged = Signal(object)
    currentNodeChangedValid = Signal(bool)
    currentNodeIDChanged = Signal(str)
    _pythonqt_signals = {
        "currentNodeChanged(vtkMRMLNode*)": "currentNodeChanged",
        "currentNodeChanged(bool)": "currentNodeChangedValid",
        "currentNodeIDChanged(QString)": "currentNodeIDChanged",
    }

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None
        self._observations = []
        self._nodes: list = []
        self._current = None
        self._types: list[str] = []
        self._flags = {"noneEnabled": False, "addEnabled": True, "removeEnabled": True, "renameEnabled": False,
                       "showChildNodeTypes": True, "showHidden": False}
        self._noneDisplay = "None"
        self._combo = QtWidgets.QComboBox(self)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._combo)
        self._combo.activated.connect(self._on_activated)

    # -- properties the .ui sets --------------------------------------------------------------
    def _get_types(self):
        return list(self._types)

    def _set_types(self, value):
        self._types = [str(v) for v in value]
        self._refresh()

    nodeTypes = Property("QStringList", _get_types, _set_types)

    def _flag(name):  # noqa: N805 (class-body helper)
        def get(self):
            return self._flags[name]

        def set_(self, value):
            self._flags[name] = bool(value)
            self._refresh()

        return Property(bool, get, set_)

    noneEnabled = _flag("noneEnabled")
    addEnabled = _flag("addEnabled")
    removeEnabled = _flag("removeEnabled")
    renameEnabled = _flag("renameEnabled")
    showChildNodeTypes = _flag("showChildNodeTypes")
    showHidden = _flag("showHidden")
    del _flag

    def _get_none_display(self):
        return self._noneDisplay

    def _set_none_display(self, text):
        self._noneDisplay = str(text)
        self._refresh()

    noneDisplay = Property(str, _get_none_display, _set_none_display)

    def _get_current_id(self):
        return self._current.GetID() if self._current is not None else ""

    currentNodeID = Property(str, _get_current_id)

    # -- API ----------------------------------------------------------------------------------
    def setMRMLScene(self, scene):  # noqa: N802
        _remove_observations(self._observations)
        self._scene = scene
        if scene is not None:
            # Like the C++ widget, stop observing the scene when the widget is destroyed; the
            # callback holds no reference to the widget so a deleted one is never called.
            observations = self._observations
            ref = weakref.ref(self)

            def changed(caller, event):
                widget = ref()
                if widget is None or not shiboken6.isValid(widget):
                    _remove_observations(observations)
                    return
                widget._refresh()

            for event in (scene.NodeAddedEvent, scene.NodeRemovedEvent, scene.EndCloseEvent, scene.EndImportEvent):
                observations.append((scene, scene.AddObserver(event, changed)))
        self._current = None
        self._refresh()

    def mrmlScene(self):  # noqa: N802
        return self._scene

    def currentNode(self):  # noqa: N802
        return self._current

    def setCurrentNode(self, node):  # noqa: N802
        if node is not None and node not in self._nodes:
            return  # like the C++ widget: a node it does not list cannot be selected
        self._select(node)

    def setCurrentNodeID(self, node_id):  # noqa: N802
        node = self._scene.GetNodeByID(node_id) if self._scene is not None and node_id else None
        self.setCurrentNode(node)

    def nodeCount(self):  # noqa: N802
        return len(self._nodes)

    def nodeFromIndex(self, index):  # noqa: N802
        return self._nodes[index]

    def displayedTexts(self) -> list[str]:
        """What the drop-down lists (harness helper)."""
        return [self._combo.itemText(i) for i in range(self._combo.count())]

    # -- internals ----------------------------------------------------------------------------
    def _accepts(self, node) -> bool:
        if node.GetHideFromEditors() and not self._flags["showHidden"]:
            return False
        if self._flags["showChildNodeTypes"]:
            return any(node.IsA(t) for t in self._types)
        return node.GetClassName() in self._types

    def _refresh(self):
        scene = self._scene
        nodes = []
        if scene is not None and self._types:
            for i in range(scene.GetNumberOfNodes()):
                node = scene.GetNthNode(i)
                if self._accepts(node):
                    nodes.append(node)
        self._nodes = nodes
        current = self._current if self._current in nodes else None
        if current is None and not self._flags["noneEnabled"] and nodes:
            current = nodes[0]
        self._combo.blockSignals(True)
        self._combo.clear()
        if self._flags["noneEnabled"]:
            self._combo.addItem(self._noneDisplay)
        for node in nodes:
            self._combo.addItem(node.GetName())
        self._combo.blockSignals(False)
        self._select(current, force_display=True)

    def _on_activated(self, index):
        offset = 1 if self._flags["noneEnabled"] else 0
        self._select(self._nodes[index - offset] if index >= offset else None)

    def _select(self, node, force_display=False):
        changed = node is not self._current
        self._current = node
        offset = 1 if self._flags["noneEnabled"] else 0
        self._combo.blockSignals(True)
        self._combo.setCurrentIndex(self._nodes.index(node) + offset if node is not None else (0 if offset else -1))
        self._combo.blockSignals(False)
        if changed:
            self.currentNodeChanged.emit(node)
            self.currentNodeChangedValid.emit(node is not None)
            self.currentNodeIDChanged.emit(node.GetID() if node is not None else "")


def _remove_observations(observations: list) -> None:
    for obj, tag in observations:
        obj.RemoveObserver(tag)
    observations.clear()


class ctkCollapsibleButton(PythonQtObject, QtWidgets.QWidget):  # noqa: N801
    """A checkable header drawn above its contents (ctk draws it in the top contents margin)."""

    contentsCollapsed = Signal(bool)
    _pythonqt_signals = {"contentsCollapsed(bool)": "contentsCollapsed"}
    HEADER = 24

    def __init__(self, parent=None):
        super().__init__(parent)
        self._text = ""
        self._collapsed = False
        self.setContentsMargins(0, self.HEADER + 2, 0, 0)

    def _get_text(self):
        return self._text

    def _set_text(self, text):
        self._text = str(text)
        self.update()

    text = Property(str, _get_text, _set_text)

    def _get_collapsed(self):
        return self._collapsed

    def _set_collapsed(self, collapsed):
        collapsed = bool(collapsed)
        if collapsed == self._collapsed:
            return
        self._collapsed = collapsed
        self._apply()
        self.contentsCollapsed.emit(collapsed)

    collapsed = Property(bool, _get_collapsed, _set_collapsed)

    def showEvent(self, event):  # noqa: N802
        self._apply()
        super().showEvent(event)

    def _apply(self):
        for child in self.findChildren(QtWidgets.QWidget, options=QtCore.Qt.FindDirectChildrenOnly):
            child.setVisible(not self._collapsed)
        self.setMaximumHeight(self.HEADER + 4 if self._collapsed else 16777215)
        self.updateGeometry()

    def mousePressEvent(self, event):  # noqa: N802
        if event.position().y() <= self.HEADER:
            self._set_collapsed(not self._collapsed)

    def paintEvent(self, event):  # noqa: N802
        # Qt getters named like properties (width, font) are attributes under PythonQt: call QWidget's.
        width = QtWidgets.QWidget.width(self)
        painter = QtWidgets.QStylePainter(self)
        option = QtWidgets.QStyleOptionButton()
        option.initFrom(self)
        option.rect = QtCore.QRect(0, 0, width, self.HEADER)
        option.text = ""
        painter.drawControl(QtWidgets.QStyle.CE_PushButton, option)
        arrow = QtWidgets.QStyleOption()
        arrow.initFrom(self)
        arrow.rect = QtCore.QRect(6, 6, 12, 12)
        primitive = QtWidgets.QStyle.PE_IndicatorArrowRight if self._collapsed else QtWidgets.QStyle.PE_IndicatorArrowDown
        painter.drawPrimitive(primitive, arrow)
        font = QtGui.QFont(QtWidgets.QWidget.font(self))
        font.setBold(True)
        painter.setFont(font)
        painter.drawText(QtCore.QRect(24, 0, width - 28, self.HEADER), QtCore.Qt.AlignVCenter, self._text)


class ctkPathLineEdit(PythonQtObject, QtWidgets.QWidget):  # noqa: N801
    """A line edit and a browse button: the path (``currentPath``) of a file or, with ``Dirs`` in
    ``filters``, a folder. The browse button opens ``qt.QFileDialog``'s static dialog as ctk does."""

    # ctkPathLineEdit::Filter values (QDir::Filter's), which PythonQt shows as class attributes
    Dirs, Files, Drives, NoSymLinks, AllEntries = 0x001, 0x002, 0x004, 0x008, 0x007
    Readable, Writable, Executable = 0x010, 0x020, 0x040

    currentPathChanged = Signal(str)
    validInputChanged = Signal(bool)
    _pythonqt_signals = {"currentPathChanged(QString)": "currentPathChanged", "validInputChanged(bool)": "validInputChanged"}

    def __init__(self, parent=None):
        super().__init__(parent)
        self._filters = self.AllEntries | self.Readable
        self._edit = QtWidgets.QLineEdit(self)
        self._browse = QtWidgets.QToolButton(self)
        self._browse.setText("...")
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._edit)
        layout.addWidget(self._browse)
        self._edit.textChanged.connect(self.currentPathChanged.emit)
        self._browse.clicked.connect(self.browse)

    def _get_path(self):
        return self._edit.text()

    def _set_path(self, path):
        self._edit.setText(str(path))

    currentPath = Property(str, _get_path, _set_path)

    def _get_filters(self):
        return self._filters

    def _set_filters(self, value):
        self._filters = int(value)

    filters = Property(int, _get_filters, _set_filters)

    def setCurrentPath(self, path):  # noqa: N802
        self._set_path(path)

    def addCurrentPathToHistory(self):  # noqa: N802 (ctk keeps a drop-down history; the harness has none)
        pass

    def browse(self):
        import qt  # the application's qt: its dialogs are answered by the harness's user

        if self._filters & self.Dirs:
            path = qt.QFileDialog.getExistingDirectory(self, "Select a directory...", self._get_path())
        else:
            path = qt.QFileDialog.getOpenFileName(self, "Open a file", self._get_path())
        if path:
            self._set_path(path)


class qMRMLSegmentEditorWidget(PythonQtObject, QtWidgets.QWidget):  # noqa: N801
    """What another module can set on Segment Editor: the segmentation, the source volume and the
    selected segment."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._segmentation = None
        self._source = None
        self._segment_id = ""

    def setSegmentationNode(self, node):  # noqa: N802
        self._segmentation = node

    def segmentationNode(self):  # noqa: N802
        return self._segmentation

    def setSourceVolumeNode(self, node):  # noqa: N802
        self._source = node

    def sourceVolumeNode(self):  # noqa: N802
        return self._source

    def setCurrentSegmentID(self, segment_id):  # noqa: N802
        self._segment_id = segment_id or ""

    def currentSegmentID(self):  # noqa: N802 (Slicer returns "" when none is selected)
        return self._segment_id


CUSTOM_WIDGETS = {
    "qMRMLWidget": qMRMLWidget,
    "qMRMLNodeComboBox": qMRMLNodeComboBox,
    "ctkCollapsibleButton": ctkCollapsibleButton,
    "ctkPathLineEdit": ctkPathLineEdit,
    "qMRMLSegmentEditorWidget": qMRMLSegmentEditorWidget,
}
