"""``slicer.ScriptedLoadableModule``: the four base classes as Slicer 5.10 defines them.

Written from Slicer's Base/Python/slicer/ScriptedLoadableModule.py (v5.10.0): every ``__init__``
is cooperative (``super().__init__()`` with no arguments), names come from the class name minus
"Widget"/"Logic", resources are found from ``slicer.modules.<name>.path``, the parameter node is a
singleton ``vtkMRMLScriptedModuleNode`` tagged with the module name, and the Test class runs
``setUp`` before each ``test*`` method and shows steps with ``delayDisplay``.
"""

from __future__ import annotations

import importlib
import logging
import os
import unittest

import slicer


class ScriptedLoadableModule:
    def __init__(self, parent):
        super().__init__()
        self.parent = parent
        self.moduleName = self.__class__.__name__
        parent.title = ""
        parent.categories = []
        parent.dependencies = []
        parent.contributors = []
        parent.helpText = "This module was created from a template and the help section has not yet been updated."
        parent.acknowledgementText = "This work is supported by NA-MIC, NAC, BIRN, NCIGT, and the Slicer Community."
        module_dir = os.path.dirname(parent.path)
        for extension in (".svg", ".png"):
            icon = os.path.join(module_dir, "Resources/Icons", self.moduleName + extension)
            if os.path.isfile(icon):
                import qt

                parent.icon = qt.QIcon(icon)
                break
        if not hasattr(slicer, "selfTests"):
            slicer.selfTests = {}
        slicer.selfTests[self.moduleName] = self.runTest

    def resourcePath(self, filename):  # noqa: N802
        return os.path.join(os.path.dirname(self.parent.path), "Resources", filename)

    def runTest(self, msec=100, **kwargs):  # noqa: N802
        module = importlib.import_module(self.__module__)
        class_name = self.moduleName + "Test"
        try:
            test_class = getattr(module, class_name)
        except AttributeError:
            raise AssertionError(f"Test case class not found: {self.__module__}.{class_name} ") from None
        test = test_class()
        test.messageDelay = msec
        test.runTest(**kwargs)


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        super().__init__()
        import qt

        self.moduleName = self.__class__.__name__
        if self.moduleName.endswith("Widget"):
            self.moduleName = self.moduleName[:-6]
        self.developerMode = slicer.util.settingsValue("Developer/DeveloperMode", False, converter=slicer.util.toBool)
        if not parent:
            self.parent = slicer.qMRMLWidget()
            self.parent.setLayout(qt.QVBoxLayout())
            self.parent.setMRMLScene(slicer.mrmlScene)
        else:
            self.parent = parent
        self.layout = self.parent.layout()
        if not parent:
            self.setup()
            self.parent.show()
        slicer.app.moduleManager().connect("moduleAboutToBeUnloaded(QString)", self._onModuleAboutToBeUnloaded)

    def resourcePath(self, filename):  # noqa: N802
        return os.path.join(os.path.dirname(slicer.util.modulePath(self.moduleName)), "Resources", filename)

    def cleanup(self):
        pass

    def _onModuleAboutToBeUnloaded(self, moduleName):  # noqa: N802, N803
        if moduleName == self.moduleName:
            self.cleanup()
            slicer.app.moduleManager().disconnect("moduleAboutToBeUnloaded(QString)", self._onModuleAboutToBeUnloaded)

    def setupDeveloperSection(self):  # noqa: N802
        pass  # developer mode (Reload & Test buttons) is off in the harness, as for users

    def setup(self):
        self.setupDeveloperSection()


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        super().__init__()
        self.moduleName = self.__class__.__name__
        if self.moduleName.endswith("Logic"):
            self.moduleName = self.moduleName[:-5]
        self.isSingletonParameterNode = True

    def getParameterNode(self):  # noqa: N802
        scene = slicer.mrmlScene
        if self.isSingletonParameterNode:
            node = scene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node:
                if node.GetAttribute("ModuleName") != self.moduleName:
                    node.SetAttribute("ModuleName", self.moduleName)
                return node
        else:
            for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode")):
                node = scene.GetNthNodeByClass(i, "vtkMRMLScriptedModuleNode")
                if node.GetAttribute("ModuleName") == self.moduleName:
                    return node
        return scene.AddNode(self.createParameterNode())

    def createParameterNode(self):  # noqa: N802
        scene = slicer.mrmlScene
        if scene is None:
            return None
        node = scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)
        if self.isSingletonParameterNode:
            node.SetSingletonTag(self.moduleName)
        node.SetAttribute("ModuleName", self.moduleName)
        node.SetName(scene.GenerateUniqueName(self.moduleName))
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    def __init__(self, *args, **kwargs):
        self.moduleTestNames = []
        super().__init__(*args, **kwargs)
        super(unittest.TestCase, self).__init__()
        self.enableScreenshots = False
        self.screenshotScaleFactor = 1.0
        if not self.moduleTestNames:
            self.moduleTestNames = [m for m in dir(self) if "test" in m and callable(getattr(self, m))]

    def delayDisplay(self, message, requestedDelay=None, msec=None):  # noqa: N802
        if hasattr(self, "messageDelay"):
            msec = self.messageDelay
        if msec is None:
            msec = requestedDelay
        if msec is None:
            msec = 100
        slicer.util.delayDisplay(message, msec)

    def setUp(self):  # noqa: N802
        return

    def tearDown(self):  # noqa: N802
        return

    def runTest(self):  # noqa: N802
        if not self.moduleTestNames:
            logging.warning("No test is defined in " + self.__class__.__name__)
            return
        self.setUpClass()
        for name in self.moduleTestNames:
            self.setUp()
            getattr(self, name)()
            self.tearDown()
        self.tearDownClass()
