"""``slicer.parameterNodeWrapper`` for the parameter types this project uses.

As in Slicer 5.10 (Base/Python/slicer/parameterNodeWrapper): a decorated class turns its annotated
members into properties stored in the wrapped ``vtkMRMLScriptedModuleNode``; constructing the
wrapper writes the default of every parameter the node does not have yet; str/int/float are stored
with ``str()``, bool as "True"/"False", MRML nodes as node references (so they survive saving and
reloading the scene). Unsupported annotations raise, as Slicer's serializer lookup does.
Not reproduced: lists, tuples, dicts, enums, validators, parameter packs, ``connectGui``.
"""

from __future__ import annotations

import typing

import slicer


class _Serializer:
    def __init__(self, kind, default):
        self.kind = kind
        self.default = default

    def is_in(self, node, name):
        return name in node.GetParameterNames()

    def write(self, node, name, value):
        if self.kind == "node":
            node.SetParameter(name, "")
            node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
        elif self.kind is bool:
            node.SetParameter(name, "True" if value else "False")
        else:
            node.SetParameter(name, str(self.kind(value)))

    def read(self, node, name):
        if self.kind == "node":
            return node.GetNodeReference(name)
        text = node.GetParameter(name)
        if self.kind is bool:
            return text == "True"
        return self.kind(text)


def _serializer(annotation, default):
    args = typing.get_args(annotation)
    if args and type(None) in args:  # Optional[...] / X | None
        (annotation,) = [a for a in args if a is not type(None)]
    if annotation in (str, int, float, bool):
        return _Serializer(annotation, annotation() if default is _MISSING else default)
    if isinstance(annotation, type) and issubclass(annotation, slicer.vtkMRMLNode):
        return _Serializer("node", None if default is _MISSING else default)
    raise Exception(f"Unable to create serializer for type: {annotation}")


_MISSING = object()


def parameterNodeWrapper(classtype):  # noqa: N802 (Slicer's name)
    hints = typing.get_type_hints(classtype)
    serializers = {name: _serializer(hint, classtype.__dict__.get(name, _MISSING)) for name, hint in hints.items()}

    def __init__(self, parameterNode):  # noqa: N803, N807
        object.__setattr__(self, "parameterNode", parameterNode)
        for name, ser in serializers.items():
            if not ser.is_in(parameterNode, name):
                ser.write(parameterNode, name, ser.default)

    def make_property(name, ser):
        def get(self):
            return ser.read(self.parameterNode, name)

        def set_(self, value):
            with slicer.util.NodeModify(self.parameterNode):
                ser.write(self.parameterNode, name, value)

        return property(get, set_)

    namespace = {"__init__": __init__, "allParameters": dict(serializers), "__module__": classtype.__module__,
                 "__doc__": classtype.__doc__}
    for name, ser in serializers.items():
        namespace[name] = make_property(name, ser)
    for key, value in classtype.__dict__.items():
        if callable(value) and key not in namespace and not key.startswith("__"):
            namespace[key] = value
    wrapped = type(classtype.__name__, (), namespace)
    wrapped.__qualname__ = classtype.__qualname__
    return wrapped
