"""``qt`` as PythonQt shows it to Slicer's Python, built on PySide6.

PythonQt (Slicer's binding) differs from PySide6 in ways a module relies on without noticing:
Qt properties are Python attributes (``button.text = "Cancel"``, ``combo.currentIndex``, also
dynamic properties), ``name`` is the object name, and objects connect signals by their C++
signature (``widget.connect("clicked(bool)", slot)``). :class:`PythonQtObject` adds exactly these
to every ``QObject`` class the module creates through ``qt`` or through ``slicer.util.loadUI``.
"""

from __future__ import annotations

import re
import types

from PySide6 import QtCore, QtGui, QtWidgets
from PySide6.QtUiTools import QUiLoader

_SIGNATURE = re.compile(r"^\s*(\w+)\s*\((.*)\)\s*$")


def _qt_property_index(obj, name: str) -> int:
    try:
        return QtCore.QObject.metaObject(obj).indexOfProperty(name)
    except RuntimeError:  # C++ object already deleted: behave like a plain attribute
        return -1


class PythonQtObject:
    """Mixin: PythonQt's attribute and connection conventions on a PySide6 object."""

    #: C++ signature -> Python signal attribute, for stand-ins whose signals carry VTK objects.
    _pythonqt_signals: dict[str, str] = {}

    def __getattribute__(self, name):
        if name in _OWN_METHODS:  # Shiboken would hand out QObject's own connect/disconnect first
            return types.MethodType(_OWN_METHODS[name], self)
        if name[:1] != "_" and name not in _PYTHON_SIDE:
            if name == "name":
                return QtCore.QObject.objectName(self)
            key = (id(self), name)
            if key not in _READING and _qt_property_index(self, name) >= 0:
                # Reading a property may call a C++ virtual (sizeHint...) whose Python-override
                # lookup asks for this same attribute: that inner lookup gets the method.
                _READING.add(key)
                try:
                    return QtCore.QObject.property(self, name)
                finally:
                    _READING.discard(key)
            try:
                if name.encode() in QtCore.QObject.dynamicPropertyNames(self):
                    return QtCore.QObject.property(self, name)
            except RuntimeError:
                pass
        return super().__getattribute__(name)

    def __setattr__(self, name, value):
        if name[:1] != "_":
            if name == "name":
                QtCore.QObject.setObjectName(self, value)
                return
            if _qt_property_index(self, name) >= 0:
                if not QtCore.QObject.setProperty(self, name, value):
                    raise TypeError(f"could not set Qt property {name!r} to {value!r}")
                return
        super().__setattr__(name, value)

    def connect(self, signal, slot, *rest):
        """PythonQt's ``obj.connect("signal(args)", callable)``."""
        if not isinstance(signal, str):
            return QtCore.QObject.connect(self, signal, slot, *rest)
        bound = self._pythonqt_signal(signal)
        if bound is not None:
            bound.connect(slot)
            return True
        return QtCore.QObject.connect(self, QtCore.SIGNAL(_normalise(signal)), slot)

    def disconnect(self, signal=None, slot=None):
        if isinstance(signal, str):
            bound = self._pythonqt_signal(signal)
            if bound is not None:
                return bound.disconnect(slot) if slot is not None else bound.disconnect()
            return QtCore.QObject.disconnect(self, QtCore.SIGNAL(_normalise(signal)), slot)
        return QtCore.QObject.disconnect(self, signal, slot) if signal is not None else QtCore.QObject.disconnect(self)

    def _pythonqt_signal(self, signature: str):
        attr = type(self)._pythonqt_signals.get(_normalise(signature))
        return getattr(self, attr) if attr else None

    def exec_(self, *args):  # PythonQt (Qt5) spelling kept by Slicer modules
        return self.exec(*args)


# Attributes that are Python-side even when a Qt property of the same name exists.
_PYTHON_SIDE = frozenset({"connect", "disconnect", "exec_", "layout", "parent", "setup"})


_READING: set = set()
_OWN_METHODS = {"connect": PythonQtObject.connect, "disconnect": PythonQtObject.disconnect}


def _normalise(signature: str) -> str:
    match = _SIGNATURE.match(signature)
    if not match:
        raise ValueError(f"not a Qt signal signature: {signature!r}")
    args = ",".join(a.strip() for a in match.group(2).split(",") if a.strip())
    return f"{match.group(1)}({args})"


_WRAPPED: dict[type, type] = {}


def pythonqt_class(cls: type) -> type:
    """``cls`` with PythonQt conventions (one subclass per Qt class, created on first use)."""
    if not (isinstance(cls, type) and issubclass(cls, QtCore.QObject)) or issubclass(cls, PythonQtObject):
        return cls
    if cls not in _WRAPPED:
        _WRAPPED[cls] = type(cls.__name__, (PythonQtObject, cls), {"__module__": "qt"})
    return _WRAPPED[cls]


class UiLoader(pythonqt_class(QUiLoader)):
    """QUiLoader that builds every widget from PythonQt classes, custom ones included (layouts stay plain)."""

    def __init__(self, custom: dict[str, type]):
        super().__init__()
        self._custom = custom

    def createWidget(self, class_name, parent=None, name=""):  # noqa: N802 (Qt override)
        cls = self._custom.get(class_name) or getattr(QtWidgets, class_name, None)
        if cls is None:
            return super().createWidget(class_name, parent, name)
        widget = pythonqt_class(cls)(parent)
        widget.setObjectName(name)
        return widget


def build_module(extra: dict[str, type]) -> types.ModuleType:
    """The ``qt`` module: QtCore, QtGui and QtWidgets names, QObject classes PythonQt-style."""
    module = types.ModuleType("qt", "PythonQt-style Qt for the Slicer harness (PySide6 underneath).")

    def __getattr__(name):
        if name in extra:
            return extra[name]
        for source in (QtWidgets, QtGui, QtCore):  # PySide6 creates its types lazily: ask, do not list
            value = getattr(source, name, None)
            if value is not None:
                value = pythonqt_class(value)
                setattr(module, name, value)
                return value
        if name == "QUiLoader":
            return QUiLoader
        raise AttributeError(f"module 'qt' has no attribute {name!r}")

    module.__getattr__ = __getattr__
    return module
