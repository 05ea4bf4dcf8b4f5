"""SlicerBrainBarriers: segment the anatomical brain barriers (cerebellum, falx cerebri, venous
sinuses, tentorium cerebelli, ventricles) from CT, T1 and T2 with HMRNet.

This file only declares the module and holds the Qt glue. Everything that touches MRML lives in
SlicerBrainBarriersLib (runs and is tested without the Slicer application); the segmentation
itself runs in a separate process (the core package's command line), so the UI never freezes.
"""

import logging
import os

import qt
import slicer
from brainbarriers.structures import OUTPUT_LABELS
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin
from SlicerBrainBarriersLib import dependencies, devices, models, panel, segments
from SlicerBrainBarriersLib.logic import BrainBarriersLogic, PipelineFailed, SegmentParameters


class SlicerBrainBarriers(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Brain Barriers"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["SlicerBrainBarriers contributors"]
        self.parent.helpText = (
            "Segments the anatomical barriers to the spread of brain tumours (cerebellum, falx cerebri, "
            "venous sinuses, tentorium cerebelli, ventricles) from CT, T1 and T2 with HMRNet. Any subset "
            "of the three inputs the model supports will do. Running again never overwrites an edited "
            "segment without asking."
        )
        self.parent.acknowledgementText = (
            "Method: HMRNet (Wang et al., 2021), trained on the ABCs MICCAI 2020 challenge data. "
            "The bundled demo model is for demonstration only, not for clinical use."
        )


class SlicerBrainBarriersWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel. Only Qt glue here: the logic and every decision are in SlicerBrainBarriersLib."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.run = None
        self.download = None  # (process, parameters) while a model is being downloaded
        self.modelEntries = []
        self.timer = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SlicerBrainBarriers.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SlicerBrainBarriersLogic()

        for key, name, color in panel.structure_items():
            item = qt.QListWidgetItem(name)
            item.setData(qt.Qt.UserRole, key)
            item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
            item.setCheckState(qt.Qt.Checked)
            item.setIcon(self._swatch(color))
            self.ui.structuresListWidget.addItem(item)
        for value, label in panel.QUALITIES:
            self.ui.qualityComboBox.addItem(label, value)
        self._fillModels()
        self._fillDevices()

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.installButton.connect("clicked(bool)", self.onInstallButton)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self._showModelInfo)
        self.timer = qt.QTimer()
        self.timer.setInterval(100)
        self.timer.connect("timeout()", self._poll)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self._autoSelectInputs)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeAddedEvent, self._autoSelectInputs)
        self._updateDependencies()
        self._autoSelectInputs()

    def cleanup(self):
        if self.run is not None:
            self.logic.cancel(self.run)
            self.run = None
        if self.download is not None:
            self.download[0].cancel()
            self.download = None
        if self.timer is not None:
            self.timer.stop()
        self.removeObservers()

    def enter(self):
        self._autoSelectInputs()

    # -- filling the panel ----------------------------------------------------------------------
    @staticmethod
    def _swatch(color):
        pixmap = qt.QPixmap(12, 12)
        pixmap.fill(qt.QColor(*color))
        return qt.QIcon(pixmap)

    def _fillModels(self):
        self.ui.modelComboBox.clear()
        self.modelEntries = models.list_models()
        for entry in self.modelEntries:
            self.ui.modelComboBox.addItem(entry.label(), entry.reference)
            self.ui.modelComboBox.setItemData(self.ui.modelComboBox.count - 1, entry.details(), qt.Qt.ToolTipRole)
        self._showModelInfo()

    def _showModelInfo(self, index=None):
        index = self.ui.modelComboBox.currentIndex
        tip = self.ui.modelComboBox.itemData(index, qt.Qt.ToolTipRole) if index >= 0 else ""
        self.ui.modelInfoLabel.text = tip or "No model found."

    def _fillDevices(self):
        self.ui.deviceComboBox.clear()
        for choice in devices.device_choices():
            self.ui.deviceComboBox.addItem(choice.label, choice.value)

    def _autoSelectInputs(self, caller=None, event=None):
        guesses = self.logic.guess_input_nodes()
        for modality, selector in (("ct", self.ui.ctSelector), ("t1", self.ui.t1Selector), ("t2", self.ui.t2Selector)):
            if selector.currentNode() is None and guesses.get(modality) is not None:
                selector.setCurrentNode(guesses[modality])

    def _updateDependencies(self):
        status = dependencies.check()
        self.ui.dependencyLabel.text = status.line()
        self.ui.installButton.visible = not status.ok

    # -- actions ------------------------------------------------------------------------------
    def _parameters(self):
        items = [self.ui.structuresListWidget.item(i) for i in range(self.ui.structuresListWidget.count)]
        if not any(it.checkState() == qt.Qt.Checked for it in items):
            raise ValueError("Tick at least one structure.")
        return SegmentParameters(
            inputs={"ct": self.ui.ctSelector.currentNode(), "t1": self.ui.t1Selector.currentNode(), "t2": self.ui.t2Selector.currentNode()},
            model=self.ui.modelComboBox.currentData or models.DEFAULT_MODEL,
            device=self.ui.deviceComboBox.currentData or "auto",
            structures=[it.data(qt.Qt.UserRole) for it in items if it.checkState() == qt.Qt.Checked],
            quality=self.ui.qualityComboBox.currentData or "fast",
            target=self.ui.outputSegmentationSelector.currentNode(),
        )

    def onApplyButton(self):
        if self.run is not None or self.download is not None:
            if self.run is not None:
                self.logic.cancel(self.run)
            if self.download is not None:
                self.download[0].cancel()
            self._finished("Cancelled; the scene is unchanged.")
            return
        with slicer.util.tryWithErrorDisplay("Could not start the segmentation.", waitCursor=True):
            self.ui.logTextEdit.clear()
            status = dependencies.check()
            if not status.ok:
                raise RuntimeError(status.line())
            params = self._parameters()
            index = self.ui.modelComboBox.currentIndex
            entry = self.modelEntries[index] if 0 <= index < len(self.modelEntries) else None
            if entry is not None and not entry.downloaded:
                if not slicer.util.confirmOkCancelDisplay(f"Download the model {entry.label()}? Its files are checked against their SHA-256."):
                    return
                process = self.logic.start_download(f"{entry.id}@{entry.version}")
                self.download = (process, params, (entry.id, entry.version))
                self._running("Downloading the model...")
            else:
                self._startRun(params)

    def _startRun(self, params):
        self.run = self.logic.start(params)
        self._log("Command: " + " ".join(self.run.process.command))
        self._running("Starting...")

    def _running(self, text):
        self.ui.applyButton.text = "Cancel"
        self.ui.progressBar.value = 0
        self.ui.progressLabel.text = text
        self.timer.start()

    def _poll(self):
        if self.download is not None:
            self._pollDownload()
            return
        if self.run is None:  # a start that failed after a download
            self._finished("Ready.")
            return
        for event in self.run.process.poll():
            if event.stage == "log":
                self._log(event.message)
                continue
            self._log(f"[{event.stage}] {event.message}")
            percent = panel.progress_percent(event)
            if percent is not None:
                self.ui.progressBar.value = percent
            self.ui.progressLabel.text = panel.stage_text(event)
        if self.run.state == "running":
            return
        run, self.run = self.run, None
        self.timer.stop()  # the import may ask questions in modal dialogs: no re-entry meanwhile
        try:
            summary = self.logic.finish(run, ask=self._askAboutEditedSegment)
            self.ui.outputSegmentationSelector.setCurrentNode(summary.node)
            self._finished(f"Done: {summary.message()}.")
        except PipelineFailed as exc:
            self._finished(f"Failed: {exc}")
            slicer.util.errorDisplay(f"Segmentation failed: {exc}", detailedText=self.ui.logTextEdit.toPlainText())
        except Exception as exc:
            logging.exception("import failed")
            self._finished(f"Failed: {exc}")
            slicer.util.errorDisplay(f"Could not import the result: {exc}")

    def _pollDownload(self):
        process, params, (model_id, version) = self.download
        for event in process.poll():
            self._log(event.message)
        if process.state == "running":
            return
        self.download = None
        if process.state != "done":
            self._finished(f"Download failed: {process.failure_message()}")
            return
        self._fillModels()
        for i, entry in enumerate(self.modelEntries):
            if (entry.id, entry.version) == (model_id, version):
                self.ui.modelComboBox.currentIndex = i
                params.model = entry.reference
        with slicer.util.tryWithErrorDisplay("Could not start the segmentation."):
            self._startRun(params)

    def _finished(self, message):
        self.timer.stop()
        self.run = None
        self.download = None
        self.ui.applyButton.text = "Segment"
        self.ui.progressLabel.text = message
        self._log(message)

    def _askAboutEditedSegment(self, segment_id, segment_name):
        box = qt.QMessageBox(slicer.util.mainWindow())
        box.setWindowTitle("Edited segment")
        box.setIcon(qt.QMessageBox.Question)
        box.setText(panel.edited_question(segment_name))
        replace = box.addButton("Replace", qt.QMessageBox.DestructiveRole)
        copy = box.addButton("Add as new segment", qt.QMessageBox.AcceptRole)
        keep = box.addButton("Keep mine", qt.QMessageBox.RejectRole)
        box.setDefaultButton(keep)
        box.exec_()
        clicked = box.clickedButton()
        return segments.REPLACE if clicked == replace else segments.ADD_COPY if clicked == copy else segments.KEEP

    def onInstallButton(self):
        plan = dependencies.plan(dependencies.check(), pytorch_utils_available=hasattr(slicer.modules, "pytorchutils"))
        with slicer.util.tryWithErrorDisplay("Installation failed.", waitCursor=True):
            dependencies.install(
                plan,
                confirm=slicer.util.confirmOkCancelDisplay,
                pip_install=slicer.util.pip_install,
                install_torch=_installTorchWithPyTorchUtils,
            )
        self._updateDependencies()
        self._fillDevices()

    def _log(self, text):
        self.ui.logTextEdit.appendPlainText(text)


def _installTorchWithPyTorchUtils(version_specifier):
    import PyTorchUtils

    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=version_specifier)
    if torch is None:
        raise RuntimeError("PyTorch was not installed")
    return torch


class SlicerBrainBarriersLogic(ScriptedLoadableModuleLogic, BrainBarriersLogic):
    """Slicer's logic entry point; see SlicerBrainBarriersLib.logic.BrainBarriersLogic."""

    def __init__(self, scene=None):
        ScriptedLoadableModuleLogic.__init__(self)
        BrainBarriersLogic.__init__(self, scene or slicer.mrmlScene)


class SlicerBrainBarriersTest(ScriptedLoadableModuleTest):
    """Self-test: segment the bundled sample case end to end (Developer Tools > Reload and Test)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_segment_sample_case()

    def test_segment_sample_case(self):
        self.delayDisplay("Loading the sample case")
        folder = os.path.join(os.path.dirname(__file__), "Resources", "SampleData")
        inputs = {m: slicer.util.loadVolume(os.path.join(folder, f"sample_{m}.nrrd")) for m in ("ct", "t1", "t2")}
        logic = SlicerBrainBarriersLogic()
        self.assertEqual(logic.guess_input_nodes(), inputs)
        self.delayDisplay("Segmenting (a few minutes on a CPU)")
        summary = logic.segment(SegmentParameters(inputs=inputs), on_progress=lambda e: logging.info(panel.stage_text(e)))
        node = summary.node
        ids = list(node.GetSegmentation().GetSegmentIDs())
        self.assertEqual(ids, [lab.segment_id for lab in OUTPUT_LABELS])
        for lab in OUTPUT_LABELS:
            self.assertEqual(node.GetSegmentation().GetSegment(lab.segment_id).GetName(), lab.name)
            self.assertTrue(segments.is_unedited(node, lab.segment_id))
        self.delayDisplay("Running again into the same node keeps it unchanged")
        again = logic.segment(SegmentParameters(inputs=inputs, target=node))
        self.assertIs(again.node, node)
        self.assertEqual(again.kept, [])
        self.delayDisplay("Test passed")
