"""SlicerBrainBarriers: segment the anatomical brain barriers (cerebellum, falx cerebri, venous
sinuses, tentorium cerebelli, ventricles) from CT, T1 and T2 with HMRNet.

This file only declares the module and holds the Qt glue. Everything that touches MRML lives in
SlicerBrainBarriersLib (runs and is tested without the Slicer application); the segmentation, the
model download, the dependency install and even the GPU detection run in child processes, so the
panel never freezes and Slicer's own process never imports torch.

Supported: Slicer 5.10 and later (Python 3.12). The panel is made of small sections (inputs, model,
structures, settings, run, result, review, DICOM export, dependencies); a new one is a ``_setup...`` method
plus its slots.
"""

import contextlib
import importlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

import ctk
import qt
import slicer
import vtk
from brainbarriers.structures import OUTPUT_LABELS
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin
from SlicerBrainBarriersLib import (
    about,
    dependencies,
    devices,
    dicom_export,
    models,
    panel,
    review,
    samples,
    segments,
)
from SlicerBrainBarriersLib.logic import BrainBarriersLogic, PipelineFailed, SegmentParameters
from SlicerBrainBarriersLib.process import PipelineProcess

#: Modality -> parameter-node attribute.
INPUT_PARAMETERS = {"ct": "ctVolume", "t1": "t1Volume", "t2": "t2Volume"}
#: Opacity of the uncertainty overlay over the images.
UNCERTAINTY_OPACITY = 0.4
#: Segmentation node attribute: the case folder "Save case for training" last wrote from it.
SAVED_CASE_ATTRIBUTE = "BrainBarriers.TrainingCase"


class SlicerBrainBarriers(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Brain Barriers"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["SlicerBrainBarriers contributors"]
        self.parent.helpText = (
            "Segments the anatomical barriers to the spread of brain tumours (cerebellum, falx cerebri, "
            "venous sinuses, tentorium cerebelli, ventricles) from CT, T1 and T2 with HMRNet. Pick the inputs "
            "(any combination the model supports), click Segment. The work runs in a separate process: the "
            "panel stays responsive and Segment turns into Cancel. Running again into an existing "
            "segmentation never overwrites an edited segment without asking. "
            "When the reference volume was loaded from the DICOM database, Export to DICOM writes the result "
            "(edits included) as DICOM SEG and/or RTSTRUCT referencing the source series. "
            "Review lists the segments the quality checks flagged and why; Next flagged centres the views on "
            "them in turn; Save case for training writes the inputs and the corrected result into a site "
            "data folder for fine-tuning. "
            "The sample case is in the Sample Data module (Brain barriers)."
        )
        # what the demo model was trained on, the licences and the version: one text, tested without Slicer
        self.parent.acknowledgementText = about.acknowledgement_text()
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """The sample case (CT, T1, T2 of one head) in the Sample Data module: one click loads it."""
    import SampleData

    folder = samples.sample_folder()
    if folder is None:
        return
    names = [f"sample_{m}" for m in ("ct", "t1", "t2")]
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="Brain barriers",
        sampleName=samples.SAMPLE_NAME,
        uris=[SampleData.path2uri(str(folder / f"{n}.nrrd")) for n in names],
        fileNames=[f"{n}.nrrd" for n in names],
        nodeNames=names,
        thumbnailFileName=os.path.join(os.path.dirname(__file__), "Resources", "Icons", "SlicerBrainBarriers.png"),
        loadFileTypes="VolumeFile",
    )


@parameterNodeWrapper
class SlicerBrainBarriersParameterNode:
    """The panel's choices, saved with the scene."""

    ctVolume: vtkMRMLScalarVolumeNode
    t1Volume: vtkMRMLScalarVolumeNode
    t2Volume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    model: str = ""
    device: str = "auto"
    quality: str = "fast"
    structures: str = ""  # comma-separated output-label keys; empty = all
    register: bool = False
    uncertainty: bool = False


class _Job:
    """One child process the panel follows from its timer."""

    def __init__(self, process, on_event=None, on_end=None, busy=True):
        self.process = process
        self.on_event = on_event
        self.on_end = on_end
        self.busy = busy  # the Segment button is a Cancel button while a busy job runs


class SlicerBrainBarriersWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel. Only Qt glue here: the logic and every decision are in SlicerBrainBarriersLib."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.jobs = []
        self.modelEntries = []
        self.timer = None
        self.result = None  # (segmentation node, reference volume) of the last run
        self.resultInputs = {}  # modality -> input volume of the last run (Save case for training)
        self.uncertaintyNode = None  # the last run's uncertainty volume, when it wrote one
        self.currentFlagged = None  # segment ID the review last jumped to
        self._parameterNode = None
        self._updatingGUI = False

    # -- set-up ---------------------------------------------------------------------------------
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SlicerBrainBarriers.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SlicerBrainBarriersLogic()
        self.timer = qt.QTimer()
        self.timer.setInterval(100)
        self.timer.connect("timeout()", self._poll)

        self._setupInputs()
        self._setupModels()
        self._setupStructures()
        self._setupSettings()
        self._setupRun()
        self._setupResult()
        self._setupReview()
        self._setupDicomExport()
        self._setupDependencies()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self._autoSelectInputs)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeAddedEvent, self._autoSelectInputs)
        self.initializeParameterNode()
        self._autoSelectInputs()

    def _setupInputs(self):
        for selector in self._inputSelectors().values():
            selector.connect("currentNodeChanged(vtkMRMLNode*)", self._onInputChanged)
        self.ui.outputSegmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateParameterNodeFromGUI)

    def _setupModels(self):
        self._fillModels()
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self._onModelChanged)
        self.ui.modelCardButton.connect("clicked(bool)", self.onModelCardButton)
        self.ui.importModelButton.connect("clicked(bool)", self.onImportModelButton)

    def _setupStructures(self):
        for key, name, color in panel.structure_items():
            item = qt.QListWidgetItem(name)
            item.setData(qt.Qt.UserRole, key)
            item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
            item.setCheckState(qt.Qt.Checked)
            item.setIcon(self._swatch(color))
            self.ui.structuresListWidget.addItem(item)
        self.ui.structuresListWidget.connect("itemChanged(QListWidgetItem*)", self.updateParameterNodeFromGUI)

    def _setupSettings(self):
        for choice in devices.unprobed_choices():
            self.ui.deviceComboBox.addItem(choice.label, choice.value)
        for value, label in panel.QUALITIES:
            self.ui.qualityComboBox.addItem(label, value)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.updateParameterNodeFromGUI)
        self.ui.qualityComboBox.connect("currentIndexChanged(int)", self.updateParameterNodeFromGUI)
        self.ui.registerCheckBox.connect("toggled(bool)", self.updateParameterNodeFromGUI)
        self.ui.uncertaintyCheckBox.connect("toggled(bool)", self.updateParameterNodeFromGUI)
        self._probeDevices()

    def _setupRun(self):
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)

    def _setupResult(self):
        self.ui.showResultButton.connect("clicked(bool)", self.onShowResultButton)
        self.ui.segmentEditorButton.connect("clicked(bool)", self.onSegmentEditorButton)

    def _setupReview(self):
        self.ui.flagsTableWidget.connect("cellDoubleClicked(int,int)", self.onFlagDoubleClicked)
        self.ui.nextFlaggedButton.connect("clicked(bool)", self.onNextFlaggedButton)
        self.ui.showUncertaintyCheckBox.connect("toggled(bool)", self.onShowUncertainty)
        self.ui.trainingFolderPathLineEdit.filters = ctk.ctkPathLineEdit.Dirs | ctk.ctkPathLineEdit.Writable
        self.ui.saveCaseButton.connect("clicked(bool)", self.onSaveCaseButton)
        self._updateReview()

    def _setupDicomExport(self):
        self.ui.dicomFolderPathLineEdit.filters = ctk.ctkPathLineEdit.Dirs | ctk.ctkPathLineEdit.Writable
        self.ui.exportDicomButton.connect("clicked(bool)", self.onExportDicomButton)
        for selector in (*self._inputSelectors().values(), self.ui.outputSegmentationSelector):
            selector.connect("currentNodeChanged(vtkMRMLNode*)", self._updateExportButton)
        self._updateExportButton()

    def _setupDependencies(self):
        self.ui.installButton.connect("clicked(bool)", self.onInstallButton)
        self._updateDependencies()

    def cleanup(self):
        for job in self.jobs:
            job.process.cancel(wait=False)
        self.jobs = []
        if self.timer is not None:
            self.timer.stop()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()
        self._autoSelectInputs()

    def exit(self):
        self._observeParameterNode(None)

    def onSceneStartClose(self, caller=None, event=None):
        if self._busy():  # its inputs are going away: nothing may be imported into the next scene
            self._cancelJobs()
            self._finished("Cancelled: the scene was closed.")
        self._observeParameterNode(None)

    def onSceneEndClose(self, caller=None, event=None):
        self._observeResult(None)
        self.result = None
        self.resultInputs = {}
        self.uncertaintyNode = None
        self.currentFlagged = None
        self._updateResultButtons()
        self.initializeParameterNode()

    # -- parameter node -------------------------------------------------------------------------
    def initializeParameterNode(self):
        self._observeParameterNode(self.logic.getParameterNode())
        self.updateGUIFromParameterNode()

    def _observeParameterNode(self, wrapper):
        if self._parameterNode is not None:
            self.removeObserver(self._parameterNode.parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = wrapper
        if wrapper is not None:
            self.addObserver(wrapper.parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)

    def updateGUIFromParameterNode(self, caller=None, event=None):
        p = self._parameterNode
        if p is None or self._updatingGUI:
            return
        self._updatingGUI = True
        try:
            for modality, selector in self._inputSelectors().items():
                selector.setCurrentNode(getattr(p, INPUT_PARAMETERS[modality]))
            self.ui.outputSegmentationSelector.setCurrentNode(p.outputSegmentation)
            for combo, value in ((self.ui.modelComboBox, p.model), (self.ui.deviceComboBox, p.device), (self.ui.qualityComboBox, p.quality)):
                index = combo.findData(value) if value else -1
                if index >= 0:
                    combo.currentIndex = index
            self.ui.registerCheckBox.checked = p.register
            self.ui.uncertaintyCheckBox.checked = p.uncertainty
            wanted = set(p.structures.split(",")) if p.structures else None
            for item in self._structureItems():
                item.setCheckState(qt.Qt.Checked if wanted is None or item.data(qt.Qt.UserRole) in wanted else qt.Qt.Unchecked)
        finally:
            self._updatingGUI = False
        self._showModelInfo()

    def updateParameterNodeFromGUI(self, *args):
        p = self._parameterNode
        if p is None or self._updatingGUI:
            return
        self._updatingGUI = True
        try:
            with slicer.util.NodeModify(p.parameterNode):
                for modality, selector in self._inputSelectors().items():
                    setattr(p, INPUT_PARAMETERS[modality], selector.currentNode())
                p.outputSegmentation = self.ui.outputSegmentationSelector.currentNode()
                p.model = self.ui.modelComboBox.currentData or ""
                p.device = self.ui.deviceComboBox.currentData or "auto"
                p.quality = self.ui.qualityComboBox.currentData or "fast"
                p.register = bool(self.ui.registerCheckBox.checked)
                p.uncertainty = bool(self.ui.uncertaintyCheckBox.checked)
                checked = self._checkedStructures()
                p.structures = "" if len(checked) == len(OUTPUT_LABELS) else ",".join(checked)
        finally:
            self._updatingGUI = False

    # -- inputs ---------------------------------------------------------------------------------
    def _inputSelectors(self):
        return {"ct": self.ui.ctSelector, "t1": self.ui.t1Selector, "t2": self.ui.t2Selector}

    def _onInputChanged(self, node=None):
        if self._updatingGUI:
            return
        # Other inputs mean another patient or study: a new result node, never the previous one.
        self.ui.outputSegmentationSelector.setCurrentNode(None)
        self.updateParameterNodeFromGUI()

    def _autoSelectInputs(self, caller=None, event=None):
        if self.logic is None:
            return
        guesses = self.logic.guess_input_nodes()
        for modality, selector in self._inputSelectors().items():
            if selector.currentNode() is None and guesses.get(modality) is not None:
                selector.setCurrentNode(guesses[modality])

    # -- models ---------------------------------------------------------------------------------
    def _fillModels(self, select=None):
        self._updatingGUI = True
        try:
            self.ui.modelComboBox.clear()
            self.modelEntries = models.list_models()
            for entry in self.modelEntries:
                self.ui.modelComboBox.addItem(entry.label(), entry.reference)
                self.ui.modelComboBox.setItemData(self.ui.modelComboBox.count - 1, entry.details(), qt.Qt.ToolTipRole)
            for i, entry in enumerate(self.modelEntries):
                if select is not None and (entry.id, entry.version) == select:
                    self.ui.modelComboBox.currentIndex = i
        finally:
            self._updatingGUI = False
        self._showModelInfo()

    def _currentModel(self):
        index = self.ui.modelComboBox.currentIndex
        return self.modelEntries[index] if 0 <= index < len(self.modelEntries) else None

    def _onModelChanged(self, index=None):
        self._showModelInfo()
        self.updateParameterNodeFromGUI()

    def _showModelInfo(self):
        entry = self._currentModel()
        self.ui.modelInfoLabel.text = entry.details() if entry is not None else "No model found."

    def onModelCardButton(self):
        entry = self._currentModel()
        if entry is None:
            return
        card, licence = entry.card_and_licence()
        slicer.util.messageBox(card, windowTitle=f"Model card: {entry.id} {entry.version}",
                               detailedText=f"Licence ({entry.licence or 'see the card'}):\n\n{licence}" if licence else None)

    def onImportModelButton(self):
        if self._busy():
            return
        path = qt.QFileDialog.getOpenFileName(self.parent, "Import a model bundle (its .zip or its manifest.json)", "",
                                              "Model bundle (*.zip manifest.json)")
        if not path:
            return
        source = str(Path(path).parent) if Path(path).name == "manifest.json" else path
        with self._reportErrors("Could not import the model."):
            process = PipelineProcess([*self.logic.command_prefix, "models", "import", source],
                                      env=self.logic.environment(), expect_result=False)
            self._startJob(_Job(process, self._logEvent, self._onImportEnded), f"Importing {source}...")

    def _onImportEnded(self, process):
        if process.state != "done":
            self._finished(f"Import failed: {process.failure_message()}")
            return
        self._fillModels()
        self._finished("Model imported and verified.")

    # -- settings -------------------------------------------------------------------------------
    def _probeDevices(self):
        """What devices the machine has, asked in a child process (no torch in Slicer's process)."""
        try:
            process = PipelineProcess([self.logic.python, "-m", "SlicerBrainBarriersLib.devices"], env=self.logic.environment())
        except Exception as exc:  # no PythonSlicer, no process: the unprobed labels stay
            logging.warning(f"Device detection not started: {exc}")
            return
        self._startJob(_Job(process, on_end=self._onDevicesProbed, busy=False))

    def _onDevicesProbed(self, process):
        if process.state != "done":
            return
        choices = devices.choices_from_outputs(process.result.outputs)
        for choice in choices:
            index = self.ui.deviceComboBox.findData(choice.value)
            if index >= 0:
                self.ui.deviceComboBox.setItemText(index, choice.label)

    # -- run ------------------------------------------------------------------------------------
    def _structureItems(self):
        return [self.ui.structuresListWidget.item(i) for i in range(self.ui.structuresListWidget.count)]

    def _checkedStructures(self):
        return [it.data(qt.Qt.UserRole) for it in self._structureItems() if it.checkState() == qt.Qt.Checked]

    def _parameters(self):
        structures = self._checkedStructures()
        if not structures:
            raise ValueError("Tick at least one structure.")
        return SegmentParameters(
            inputs={m: selector.currentNode() for m, selector in self._inputSelectors().items()},
            model=self.ui.modelComboBox.currentData or models.DEFAULT_MODEL,
            device=self.ui.deviceComboBox.currentData or "auto",
            structures=structures,
            quality=self.ui.qualityComboBox.currentData or "fast",
            target=self.ui.outputSegmentationSelector.currentNode(),
            register=bool(self.ui.registerCheckBox.checked),
            uncertainty=bool(self.ui.uncertaintyCheckBox.checked),
        )

    def onApplyButton(self):
        if self._busy():
            self._cancelJobs()
            self._finished("Cancelled; the scene is unchanged.")
            return
        with self._reportErrors("Could not start the segmentation."):
            self.ui.logTextEdit.clear()
            status = dependencies.check()
            if not status.ok:
                raise RuntimeError(status.line())
            params = self._parameters()
            entry = self._currentModel()
            problem = entry.input_problem(params.modalities()) if entry is not None else None
            if problem:
                raise ValueError(problem)
            if entry is not None and not entry.downloaded:
                if not slicer.util.confirmOkCancelDisplay(f"Download the model {entry.label()}? Its files are checked against their SHA-256."):
                    return
                process = PipelineProcess([self.logic.python, "-m", "SlicerBrainBarriersLib.model_jobs", "download",
                                           f"{entry.id}@{entry.version}"], env=self.logic.environment())
                self._startJob(_Job(process, self._progressEvent, lambda p: self._onDownloadEnded(p, params, entry)),
                               "Downloading the model...")
            else:
                self._startRun(params)

    def _onDownloadEnded(self, process, params, entry):
        if process.state != "done":
            self._finished(f"Download failed: {process.failure_message()}")
            return
        self._fillModels(select=(entry.id, entry.version))
        params.model = self.ui.modelComboBox.currentData or params.model
        with self._reportErrors("Could not start the segmentation."):
            self._startRun(params)

    def _startRun(self, params):
        run = self.logic.start(params)
        self._log("Command: " + " ".join(run.process.command))
        job = _Job(run.process, self._progressEvent, lambda p: self._onRunEnded(run))
        job.run = run
        self._startJob(job, "Starting...")

    def _onRunEnded(self, run):
        if run.state == "cancelled":
            return
        self.timer.stop()  # the import may ask questions in modal dialogs: no re-entry meanwhile
        try:
            summary = self.logic.finish(run, ask=self._askAboutEditedSegment)
        except PipelineFailed as exc:
            text = panel.failure_text(str(exc), run.params.register)
            self._finished(text)
            slicer.util.errorDisplay(text, detailedText=self.ui.logTextEdit.toPlainText())
            return
        except Exception as exc:
            logging.exception("import failed")
            self._finished(f"Could not import the result: {exc}")
            slicer.util.errorDisplay(f"Could not import the result: {exc}")
            return
        self.ui.progressBar.value = 100
        self._observeResult(summary.node)
        self.result = (summary.node, run.reference_node)
        self.resultInputs = {m: n for m, n in run.params.inputs.items() if n is not None}  # what the result was made from
        self.uncertaintyNode = summary.uncertainty
        self.currentFlagged = None
        self._updateResultButtons()
        self.onShowResultButton()
        for line in review.flag_messages(summary.node, summary.flagged):
            self._log(f"Flagged: {line}")
        self._finished(f"Done: {summary.node.GetName()}: {summary.message()}.")

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

    # -- result ---------------------------------------------------------------------------------
    def _updateResultButtons(self):
        ok = self.result is not None and self.result[0].GetScene() is slicer.mrmlScene
        self.ui.showResultButton.enabled = ok
        self.ui.segmentEditorButton.enabled = ok
        self._updateExportButton()
        self._updateReview()

    def onShowResultButton(self):
        if self.result is None:
            return
        node, reference = self.result
        segments.show_in_3d(node)
        slicer.util.setSliceViewerLayers(background=reference, fit=True)
        layout = slicer.app.layoutManager()
        if layout is not None and layout.threeDViewCount:
            layout.threeDWidget(0).threeDView().resetFocalPoint()
        if self._uncertaintyShown():
            self.onShowUncertainty(True)

    def onSegmentEditorButton(self):
        if self.result is None:
            return
        node, reference = self.result
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.SegmentEditorWidget.editor
        editor.setSegmentationNode(node)
        editor.setSourceVolumeNode(reference)

    # -- review ---------------------------------------------------------------------------------
    def _resultNode(self):
        ok = self.result is not None and self.result[0].GetScene() is slicer.mrmlScene
        return self.result[0] if ok else None

    def _uncertaintyShown(self):
        return self.uncertaintyNode is not None and self.uncertaintyNode.GetScene() is slicer.mrmlScene

    def _observeResult(self, node):
        """Keep the flags table in step with the segment status the user sets (Segment Editor: reviewed...)."""
        old = self.result[0] if self.result is not None else None
        events = (slicer.vtkSegmentation.SegmentModified, slicer.vtkSegmentation.SegmentAdded,
                  slicer.vtkSegmentation.SegmentRemoved)
        if old is not None and old is not node:
            for event in events:
                self.removeObserver(old, event, self._onResultSegmentsChanged)
        if node is not None and node is not old:
            for event in events:
                self.addObserver(node, event, self._onResultSegmentsChanged)

    def _onResultSegmentsChanged(self, caller=None, event=None):
        self._updateReview()

    def _updateReview(self):
        """The flags table, the flagged count and the review buttons from the result node as it is now."""
        node = self._resultNode()
        flagged = review.flagged_segments(node) if node is not None else []
        table = self.ui.flagsTableWidget
        rows = [(segment_id, flag) for segment_id, flags in flagged for flag in (flags or [{"kind": "", "reason": ""}])]
        table.setRowCount(len(rows))
        for row, (segment_id, flag) in enumerate(rows):
            segment = node.GetSegmentation().GetSegment(segment_id)
            tooltip = review.flag_tooltip(segment)
            for column, text in enumerate((segment.GetName(), flag.get("kind", ""), flag.get("reason", ""))):
                item = qt.QTableWidgetItem(text)
                item.setData(qt.Qt.UserRole, segment_id)
                item.setToolTip(tooltip)
                table.setItem(row, column, item)
        table.resizeColumnToContents(0)
        table.resizeColumnToContents(1)
        if node is None:
            self.ui.flaggedLabel.text = "No result yet."
        else:
            self.ui.flaggedLabel.text = panel.flagged_text(len(flagged))
        self.ui.nextFlaggedButton.enabled = bool(flagged)
        shown = self._uncertaintyShown()
        self.ui.showUncertaintyCheckBox.enabled = shown
        if not shown and self.ui.showUncertaintyCheckBox.checked:
            self.ui.showUncertaintyCheckBox.checked = False
        self.ui.saveCaseButton.enabled = node is not None

    def _goToFlagged(self, segment_id, ras):
        """Select a flagged segment (table row, Segment Editor when it edits this node) and centre the views on it."""
        node = self._resultNode()
        self.currentFlagged = segment_id
        table = self.ui.flagsTableWidget
        for row in range(table.rowCount):
            item = table.item(row, 0)
            if item is not None and item.data(qt.Qt.UserRole) == segment_id:
                table.selectRow(row)
                break
        editor_widget = getattr(slicer.modules, "SegmentEditorWidget", None)
        editor = getattr(editor_widget, "editor", None)
        if editor is not None and editor.segmentationNode() is node:
            editor.setCurrentSegmentID(segment_id)
        name = node.GetSegmentation().GetSegment(segment_id).GetName()
        if ras is None:  # flagged as missing: nothing to show
            self._log(f"{name} is empty: nothing to centre the views on.")
            return
        review.jump_to(slicer.mrmlScene, ras)
        self._log(f"Centred the views on {name}.")

    def onFlagDoubleClicked(self, row, column=0):
        node = self._resultNode()
        item = self.ui.flagsTableWidget.item(row, 0)
        if node is None or item is None:
            return
        segment_id = item.data(qt.Qt.UserRole)
        if node.GetSegmentation().GetSegment(segment_id) is None:  # removed since the table was filled
            self._updateReview()
            return
        self._goToFlagged(segment_id, review.segment_centre(node, segment_id))

    def onNextFlaggedButton(self):
        node = self._resultNode()
        found = review.next_flagged(node, self.currentFlagged) if node is not None else None
        if found is None:  # the user may have set every flagged segment to reviewed meanwhile
            self._updateReview()
            return
        self._goToFlagged(*found)

    def onShowUncertainty(self, show):
        if not self._uncertaintyShown():
            return
        if show:
            review.show_overlay(slicer.mrmlScene, self.uncertaintyNode, UNCERTAINTY_OPACITY)
        else:
            review.hide_overlay(slicer.mrmlScene, self.uncertaintyNode)
        if bool(self.ui.showUncertaintyCheckBox.checked) != bool(show):
            self.ui.showUncertaintyCheckBox.checked = bool(show)

    def onSaveCaseButton(self):
        node = self._resultNode()
        if self._busy() or node is None:
            return
        folder = self.ui.trainingFolderPathLineEdit.currentPath.strip()
        if not folder:
            self.ui.trainingFolderPathLineEdit.browse()  # the folder picker, as its browse button opens it
            folder = self.ui.trainingFolderPathLineEdit.currentPath.strip()
            if not folder:
                return
        # saving the same segmentation into the same folder again replaces its case, after asking
        case, overwrite = None, False
        previous = node.GetAttribute(SAVED_CASE_ATTRIBUTE)
        if previous and Path(previous).parent == Path(folder) and Path(previous).is_dir():
            if not slicer.util.confirmOkCancelDisplay(
                    f"Case {Path(previous).name} in {folder} was saved from {node.GetName()}. Replace it?"):
                return
            case, overwrite = Path(previous).name, True
        try:
            with slicer.util.tryWithErrorDisplay("Save case for training failed.", waitCursor=True):
                inputs = {m: n for m, n in self.resultInputs.items() if n.GetScene() is slicer.mrmlScene}
                saved = self.logic.save_case_for_training(node, inputs, folder, case, overwrite)
        except Exception as exc:  # shown by tryWithErrorDisplay; the panel stays usable
            self._finished(f"Save case for training failed: {exc}")
            return
        node.SetAttribute(SAVED_CASE_ATTRIBUTE, str(saved.folder))
        self.ui.trainingFolderPathLineEdit.addCurrentPathToHistory()
        edited = saved.provenance.get("edited") or []
        names = [saved.provenance["structures"][k]["segment"] for k in edited]
        self._log(f"Saved case {saved.folder}")
        self._log("Edited segments: " + (", ".join(names) if names else "none"))
        self._finished(f"Saved case {saved.folder.name} for training in {folder} ({len(names)} edited).")

    # -- DICOM export ---------------------------------------------------------------------------
    def _exportSource(self):
        """(segmentation, reference volume, why not) for Export to DICOM."""
        inputs = {m: selector.currentNode() for m, selector in self._inputSelectors().items()}
        return dicom_export.choose_export(inputs, self.ui.outputSegmentationSelector.currentNode(), self.result)

    def _updateExportButton(self, *args):
        segmentation, reference, why_not = self._exportSource()
        self.ui.exportDicomButton.enabled = why_not is None
        self.ui.exportDicomButton.toolTip = why_not or (
            f"Write {segmentation.GetName()} as it is now (edited segments included) as DICOM, "
            f"referencing the series of {reference.GetName()}.")

    def onExportDicomButton(self):
        if self._busy():
            return
        status = dependencies.check(dicom_export.DICOM_REQUIREMENTS)
        if not status.ok:  # pydicom/highdicom are optional: offered the first time they are needed
            self._offerInstall(status, then=self._exportDicom)
            return
        self._exportDicom()

    def _exportDicom(self):
        segmentation, reference, why_not = self._exportSource()
        if why_not is not None:
            self._finished(f"Cannot export to DICOM: {why_not}")
            return
        seg, rtstruct = bool(self.ui.dicomSegCheckBox.checked), bool(self.ui.rtstructCheckBox.checked)
        add = bool(self.ui.addToDatabaseCheckBox.checked)
        folder = self.ui.dicomFolderPathLineEdit.currentPath.strip()
        if not (seg or rtstruct):
            self._finished("Cannot export to DICOM: tick DICOM SEG and/or RTSTRUCT.")
            return
        if not folder and not add:
            self._finished("Cannot export to DICOM: choose a folder, or tick Add to DICOM database.")
            return
        overwrite = False
        if folder:
            existing = [p.name for p in dicom_export.output_paths(segmentation, folder, seg, rtstruct).values() if p.exists()]
            if existing:
                if not slicer.util.confirmOkCancelDisplay(f"Replace {', '.join(existing)} in {folder}?"):
                    return
                overwrite = True
        with tempfile.TemporaryDirectory(prefix="BrainBarriers-dicom-") as scratch:
            try:
                with slicer.util.tryWithErrorDisplay("Export to DICOM failed.", waitCursor=True):
                    written = dicom_export.export_to_dicom(segmentation, reference, folder or scratch, seg=seg,
                                                           rtstruct=rtstruct, add_to_database=add, overwrite=overwrite)
            except Exception as exc:  # shown by tryWithErrorDisplay; the panel stays usable
                self._finished(f"Export to DICOM failed: {exc}")
                return
        if folder:
            self.ui.dicomFolderPathLineEdit.addCurrentPathToHistory()
            for path in written.values():
                self._log(f"Wrote {path}")
        where = " and ".join(([folder] if folder else []) + (["the DICOM database"] if add else []))
        self._finished(f"Exported {segmentation.GetName()} to {where}: {', '.join(Path(p).name for p in written.values())}.")

    # -- dependencies ---------------------------------------------------------------------------
    def _updateDependencies(self):
        status = dependencies.check()
        self.ui.dependencyLabel.text = status.line()
        self.ui.installButton.visible = not status.ok

    def onInstallButton(self):
        if self._busy():
            return
        self._offerInstall(dependencies.check())

    def _offerInstall(self, status, then=None):
        """Ask, then install what ``status`` misses in child processes; ``then()`` runs after success."""
        plan = dependencies.plan(status, pytorch_utils_available=hasattr(slicer.modules, "pytorchutils"))
        if not slicer.util.confirmOkCancelDisplay(plan.describe()):
            return
        with self._reportErrors("Installation failed."):
            if plan.torch and plan.use_pytorch_utils:
                self._log(f"Installing {plan.torch} through the PyTorch extension...")
                _installTorchWithPyTorchUtils(plan.torch[len("torch"):])
            constraints = Path(tempfile.mkdtemp(prefix="BrainBarriers-pip-")) / "slicer-owned.txt"
            self._runInstallCommands(dependencies.pip_commands(plan, self.logic.python, constraints), then)

    def _runInstallCommands(self, commands, then=None):
        if not commands:
            importlib.invalidate_caches()  # packages pip just added must be importable in this process
            self._updateDependencies()
            self._finished("Dependencies installed.")
            if then is not None:
                then()
            return
        command, rest = commands[0], commands[1:]
        self._log("Running: " + " ".join(command))
        process = PipelineProcess(command, expect_result=False)
        self._startJob(_Job(process, self._logEvent, lambda p: self._onInstallStepEnded(p, rest, then)),
                       "Installing dependencies...")

    def _onInstallStepEnded(self, process, rest, then=None):
        if process.state != "done":
            self._finished(f"Installation failed: {process.failure_message()}")
            self._updateDependencies()
            return
        self._runInstallCommands(rest, then)

    # -- jobs and the timer ---------------------------------------------------------------------
    def _busy(self):
        return any(job.busy for job in self.jobs)

    def _startJob(self, job, text=None):
        self.jobs.append(job)
        if job.busy:
            self.ui.applyButton.text = "Cancel"
            self.ui.progressBar.value = 0
            self.ui.progressLabel.text = text or "Working..."
        self.timer.start()

    def _cancelJobs(self):
        for job in [j for j in self.jobs if j.busy]:
            self.jobs.remove(job)
            run = getattr(job, "run", None)
            if run is not None:
                self.logic.cancel(run, wait=False)  # returns at once; the tree ends in the background
            else:
                job.process.cancel(wait=False)

    def _poll(self):
        for job in list(self.jobs):
            for event in job.process.poll():
                if job.on_event is not None:
                    job.on_event(event)
            if job.process.state == "running" or job not in self.jobs:
                continue
            self.jobs.remove(job)
            if job.on_end is not None:
                job.on_end(job.process)
        if not self.jobs:
            self.timer.stop()
        elif not self.timer.isActive():
            self.timer.start()

    def _progressEvent(self, event):
        if event.stage == "log":
            self._log(event.message)
            return
        self._log(f"[{event.stage}] {event.message}")
        percent = panel.progress_percent(event)
        if percent is not None:
            self.ui.progressBar.value = percent
        self.ui.progressLabel.text = panel.stage_text(event)

    def _logEvent(self, event):
        self._log(event.message)

    def _finished(self, message):
        if not self._busy():
            self.ui.applyButton.text = "Segment"
        self.ui.progressLabel.text = message
        self._log(message)

    @contextlib.contextmanager
    def _reportErrors(self, what):
        """Say what went wrong under the progress bar and in a dialog; the panel stays usable."""
        try:
            yield
        except Exception as exc:
            logging.info(f"{what} {exc}")
            self._finished(f"{what} {exc}")
            slicer.util.errorDisplay(f"{what}\n\n{exc}")

    # -- small helpers --------------------------------------------------------------------------
    @staticmethod
    def _swatch(color):
        pixmap = qt.QPixmap(12, 12)
        pixmap.fill(qt.QColor(*color))
        return qt.QIcon(pixmap)

    def _log(self, text):
        self.ui.logTextEdit.appendPlainText(text)


def _installTorchWithPyTorchUtils(version_specifier):
    import PyTorchUtils

    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=version_specifier)
    if torch is None:
        raise RuntimeError("PyTorch was not installed")
    return torch


class SlicerBrainBarriersLogic(ScriptedLoadableModuleLogic):
    """Slicer's logic entry point. Holds a :class:`BrainBarriersLogic` (composition: Slicer's base
    class calls ``super().__init__()`` without arguments, so the core logic cannot be a second base)
    and offers its methods (start, finish, cancel, segment, guess_input_nodes...)."""

    def __init__(self, scene=None):
        ScriptedLoadableModuleLogic.__init__(self)
        self.core = BrainBarriersLogic(scene or slicer.mrmlScene)

    def getParameterNode(self):
        return SlicerBrainBarriersParameterNode(super().getParameterNode())

    def __getattr__(self, name):
        if name == "core":  # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self.core, name)


class SlicerBrainBarriersTest(ScriptedLoadableModuleTest):
    """Self-test (Developer Tools > Reload and Test, or ctest in the extension build tree): segments
    the sample case with a tiny random-weight bundle (seconds on a CPU) and checks the result node.
    Works in the build/install tree (sample copied next to the module) and in a source checkout."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_segment_sample_case()

    def test_segment_sample_case(self):
        self.delayDisplay("Loading the sample case")
        inputs = {m: slicer.util.loadVolume(str(path)) for m, path in samples.sample_files().items()}
        logic = SlicerBrainBarriersLogic()
        self.assertEqual(logic.guess_input_nodes(), inputs)

        self.delayDisplay("Writing a tiny test model")
        bundle = Path(tempfile.mkdtemp(prefix="BrainBarriers-selftest-")) / "bundle"
        maker = PipelineProcess([logic.python, "-m", "SlicerBrainBarriersLib.selftest_bundle", str(bundle)], env=logic.environment())
        self.assertEqual(maker.wait(timeout=300), "done", maker.failure_message())

        self.delayDisplay("Segmenting")
        params = SegmentParameters(inputs=inputs, model=str(bundle), device="cpu")
        try:
            summary = logic.segment(params, on_progress=lambda e: logging.info(panel.stage_text(e)), timeout=600)
        finally:
            shutil.rmtree(bundle.parent, ignore_errors=True)
        node = summary.node
        ids = list(node.GetSegmentation().GetSegmentIDs())
        self.assertEqual(ids, [lab.segment_id for lab in OUTPUT_LABELS])
        for lab in OUTPUT_LABELS:
            segment = node.GetSegmentation().GetSegment(lab.segment_id)
            self.assertEqual(segment.GetName(), lab.name)
            self.assertEqual(tuple(round(c, 3) for c in segment.GetColor()), tuple(round(c, 3) for c in lab.color_float))
            self.assertEqual(segment.GetTerminology(), lab.terminology())
            self.assertTrue(segments.is_unedited(node, lab.segment_id))
        self.delayDisplay("Test passed")
