"""The real module file (SlicerBrainBarriers.py and its .ui) inside the Slicer-faithful harness:
it registers, its panel opens, a click on Segment runs the real command line on a tiny bundle in a
child process while the Qt event loop turns, Cancel returns at once, results land in new nodes."""

from __future__ import annotations

import hashlib
import http.server
import importlib.abc
import json
import os
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
from brainbarriers.structures import OUTPUT_LABELS
from slicer_module_helpers import (
    MODULE_FILE,
    REPO,
    Panel,
    load_dicom_patient,
    load_patient,
    slicer_harness,
    snapshot,
    write_tiny_bundle,
)


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    saved = os.environ.get("BRAINBARRIERS_CACHE")
    os.environ["BRAINBARRIERS_CACHE"] = str(cache)  # imported bundles go here, in this process and its children
    h = slicer_harness.install()
    yield h
    slicer_harness.uninstall()
    if saved is None:
        os.environ.pop("BRAINBARRIERS_CACHE", None)
    else:
        os.environ["BRAINBARRIERS_CACHE"] = saved


@pytest.fixture(scope="module")
def module(harness):
    module = harness.load_module(MODULE_FILE)
    import slicer

    slicer.app.startupCompleted.emit()  # the application finished loading its modules
    return module


@pytest.fixture(scope="module")
def panel(harness, module, tmp_path_factory):
    p = Panel(harness, module)
    bundle = write_tiny_bundle(tmp_path_factory.mktemp("tiny") / "tiny")
    harness.user.will(str(bundle / "manifest.json"))  # the user picks the bundle's manifest.json
    p.click(p.ui.importModelButton)
    p.wait_idle(120)
    assert "imported" in p.ui.progressLabel.text, p.ui.logTextEdit.toPlainText()
    return p


@pytest.fixture
def fresh(panel, harness):
    harness.new_scene()
    harness.user.answers.clear()
    panel.select_model("tiny-test")
    yield panel
    harness.raise_slot_errors()
    assert not harness.user.answers, f"dialogs the module never opened: {list(harness.user.answers)}"


def test_module_registers_and_panel_opens(harness, module):
    import slicer

    assert module.title == "Brain Barriers" and module.categories == ["Segmentation"]
    assert "SlicerBrainBarriers" in slicer.selfTests
    assert "ABCs" not in module.acknowledgementText.split("Models trained on")[0]  # the demo model is not ABCs-trained
    widget = module.widgetRepresentation()  # Slicer builds the panel on first open: setup() runs here
    assert widget is not None and slicer.modules.SlicerBrainBarriersWidget.logic is not None
    harness.raise_slot_errors()


def test_logic_builds_under_cooperative_init(harness, module):
    logic = sys.modules["SlicerBrainBarriers"].SlicerBrainBarriersLogic()
    assert logic.moduleName == "SlicerBrainBarriers"
    params = logic.getParameterNode()
    assert params.device == "auto" and params.parameterNode.GetAttribute("ModuleName") == "SlicerBrainBarriers"


def test_sample_data_one_click_fills_the_selectors(fresh, harness):
    import SampleData
    import slicer

    sources = slicer.modules.sampleDataSources["Brain barriers"]
    assert [s.sampleName for s in sources] == ["BrainBarriersSample"]
    nodes = SampleData.downloadSample("BrainBarriersSample")
    assert [n.GetName() for n in nodes] == ["sample_ct", "sample_t1", "sample_t2"]
    harness.process_events(0.1)
    ui = fresh.ui
    assert [ui.ctSelector.currentNode(), ui.t1Selector.currentNode(), ui.t2Selector.currentNode()] == nodes
    assert ui.outputSegmentationSelector.currentNode() is None
    assert ui.structuresListWidget.count == len(OUTPUT_LABELS)
    assert [ui.deviceComboBox.itemData(i) for i in range(ui.deviceComboBox.count)] == ["auto", "cpu", "cuda", "mps"]


class _RefuseTorch(importlib.abc.MetaPathFinder):
    def __init__(self):
        self.attempts = []

    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            self.attempts.append(name)
            raise ImportError("torch must not be imported in Slicer's process by the panel")
        return None


def test_opening_the_panel_never_imports_torch(harness, module, tmp_path):
    hidden = {k: sys.modules.pop(k) for k in list(sys.modules) if k == "torch" or k.startswith("torch.")}
    guard = _RefuseTorch()
    sys.meta_path.insert(0, guard)
    try:
        import slicer

        parent = slicer.qMRMLWidget()
        import qt

        parent.setLayout(qt.QVBoxLayout())
        parent.setMRMLScene(slicer.mrmlScene)
        widget = sys.modules["SlicerBrainBarriers"].SlicerBrainBarriersWidget(parent)
        widget.setup()
        harness.wait_until(lambda: not widget.jobs, 120, "the device probe")  # the child process asks torch
        labels = [widget.ui.deviceComboBox.itemText(i) for i in range(4)]
        widget.cleanup()
    finally:
        sys.meta_path.remove(guard)
        sys.modules.update(hidden)
    assert guard.attempts == []
    assert labels[0].startswith("Auto (") and "checking" not in labels[2]  # filled in by the child's answer


def test_volume_listing_does_not_leak_nodes(harness, module, tmp_path):
    import slicer

    harness.new_scene()
    node = load_patient(tmp_path, "leak", modalities=("ct",))["ct"]
    logic = sys.modules["SlicerBrainBarriers"].SlicerBrainBarriersLogic()
    before = node.GetReferenceCount()
    for _ in range(5):
        logic.guess_input_nodes()
    assert node.GetReferenceCount() == before
    assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 1


def test_segment_runs_in_background_and_makes_five_segments(fresh, harness, tmp_path):
    import qt
    import slicer

    nodes = load_patient(tmp_path, "P1")
    ui = fresh.ui
    assert ui.ctSelector.currentNode() is nodes["ct"]  # names like "P1 CT" are recognised
    ticks, progress = [], []
    timer = qt.QTimer()
    timer.setInterval(20)
    timer.connect("timeout()", lambda: ticks.append(time.monotonic()))
    timer.start()
    ui.progressBar.connect("valueChanged(int)", progress.append)
    click_s = fresh.click(ui.applyButton)
    assert click_s < 1.0 and ui.applyButton.text == "Cancel"
    fresh.wait_idle()
    timer.stop()
    assert ui.progressLabel.text.startswith("Done"), ui.logTextEdit.toPlainText()
    assert len(ticks) > 10  # the event loop kept turning while the pipeline ran
    assert len(set(progress)) >= 3 and progress[-1] == 100 and progress == sorted(progress)
    node, reference = fresh.widget.result
    assert reference is nodes["ct"]
    segmentation = node.GetSegmentation()
    assert list(segmentation.GetSegmentIDs()) == [lab.segment_id for lab in OUTPUT_LABELS]
    for lab in OUTPUT_LABELS:
        segment = segmentation.GetSegment(lab.segment_id)
        assert segment.GetName() == lab.name
        assert tuple(round(c, 3) for c in segment.GetColor()) == tuple(round(c, 3) for c in lab.color_float)
        assert segment.GetTerminology() == lab.terminology()
    assert ui.outputSegmentationSelector.currentNode() is None  # the next run makes a new node
    assert ui.segmentEditorButton.enabled and ("setSliceViewerLayers", nodes["ct"], True) in harness.view_calls

    fresh.click(ui.segmentEditorButton)
    assert harness.current_module == "SegmentEditor"
    editor = slicer.modules.SegmentEditorWidget.editor
    assert editor.segmentationNode() is node and editor.sourceVolumeNode() is nodes["ct"]

    # a second patient in the same scene gets its own node; the first one is untouched
    first_mtime = node.GetMTime()
    second = load_patient(tmp_path / "p2", "P2", seed=10)
    for modality, selector in (("ct", ui.ctSelector), ("t1", ui.t1Selector), ("t2", ui.t2Selector)):
        selector.setCurrentNode(second[modality])
    fresh.click(ui.applyButton)
    fresh.wait_idle()
    new_node, new_reference = fresh.widget.result
    assert new_node is not node and new_reference is second["ct"]
    assert node.GetMTime() == first_mtime
    assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 2


def test_cancel_returns_at_once_and_leaves_the_scene_unchanged(fresh, harness, tmp_path):
    load_patient(tmp_path, "C")
    ui = fresh.ui
    before = snapshot()
    fresh.click(ui.applyButton)
    job = fresh.widget.jobs[-1]
    run = job.run
    harness.wait_until(lambda: run.process.last_progress is not None, 120, "the pipeline's first progress line")
    assert run.state == "running"
    cancel_s = fresh.click(ui.applyButton)
    assert cancel_s < 0.5  # the GUI thread never waits for the child to die
    assert ui.applyButton.text == "Segment" and "Cancelled" in ui.progressLabel.text
    harness.wait_until(lambda: run.process.ended and not run.workdir.exists(), 30, "the child to end")
    harness.process_events(0.3)
    assert snapshot() == before


def test_unsupported_input_combination_is_refused_before_launch(fresh, harness, tmp_path):
    load_patient(tmp_path, "S", modalities=("ct",))
    fresh.click(fresh.ui.applyButton)
    assert fresh.idle()
    assert "takes CT+T1+T2; you selected CT" in fresh.ui.progressLabel.text


def test_misaligned_inputs_say_how_to_fix_it(fresh, harness, tmp_path):
    load_patient(tmp_path, "M", t2_shift_mm=25.0)
    fresh.click(fresh.ui.applyButton)
    fresh.wait_idle()
    text = fresh.ui.progressLabel.text
    assert "does not line up" in text and "Co-register MR inputs" in text
    fresh.ui.registerCheckBox.checked = True
    fresh.click(fresh.ui.applyButton)
    assert "--register" in fresh.ui.logTextEdit.toPlainText()
    fresh.click(fresh.ui.applyButton)  # cancel: registering is not what this test measures


def test_choices_live_in_the_parameter_node_and_come_back_with_the_scene(fresh, harness, tmp_path):
    import qt
    import slicer

    nodes = load_patient(tmp_path, "R")
    ui = fresh.ui
    ui.qualityComboBox.currentIndex = ui.qualityComboBox.findData("full")
    ui.registerCheckBox.checked = True
    ui.structuresListWidget.item(1).setCheckState(qt.Qt.Unchecked)  # falx off
    params = fresh.widget._parameterNode
    assert (params.quality, params.register, params.ctVolume) == ("full", True, nodes["ct"])
    assert params.structures == ",".join(lab.key for lab in OUTPUT_LABELS if lab.key != OUTPUT_LABELS[1].key)
    scene_file = tmp_path / "scene.mrml"
    slicer.mrmlScene.SetURL(str(scene_file))
    assert slicer.mrmlScene.Commit()
    harness.new_scene()
    assert ui.qualityComboBox.currentData == "fast" and not ui.registerCheckBox.checked
    slicer.mrmlScene.SetURL(str(scene_file))
    assert slicer.mrmlScene.Import()
    fresh.widget.enter()
    assert ui.qualityComboBox.currentData == "full" and ui.registerCheckBox.checked
    assert ui.ctSelector.currentNode().GetName() == "R CT"
    assert ui.structuresListWidget.item(1).checkState() == qt.Qt.Unchecked


def test_model_card_and_licence(fresh, harness):
    fresh.select_model("brainbarriers-demo")
    harness.user.will(True)
    fresh.click(fresh.ui.modelCardButton)
    kind, text = harness.user.seen[-1]
    card = (REPO / "SlicerBrainBarriers" / "brainbarriers" / "models" / "brainbarriers-demo" / "MODEL_CARD.md").read_text()
    assert card.splitlines()[0] in text and "CC-BY-NC-4.0" in text


def test_missing_python_slicer_is_a_clear_error(fresh, harness, tmp_path):
    import slicer

    load_patient(tmp_path, "N")
    launcher = Path(slicer.app.slicerHome) / "bin" / "PythonSlicer"
    saved = launcher.read_bytes()
    launcher.unlink()
    fresh.widget.logic.core._python = None
    try:
        fresh.click(fresh.ui.applyButton)
    finally:
        launcher.write_bytes(saved)
        launcher.chmod(0o755)
    assert fresh.idle()
    assert "PythonSlicer was not found" in fresh.ui.progressLabel.text
    assert sys.executable not in fresh.ui.logTextEdit.toPlainText()


def test_the_module_self_test_passes(harness, module, panel):
    import slicer

    slicer.selfTests["SlicerBrainBarriers"]()


def test_panel_screenshot_after_a_real_run(fresh, harness, tmp_path):
    """The README/extension screenshot: the real panel after a real run, rendered offscreen."""

    target = os.environ.get("BRAINBARRIERS_SCREENSHOT")
    if target:  # the published picture: the bundled sample case and the demo model
        import SampleData

        SampleData.downloadSample("BrainBarriersSample")
        fresh.select_model("brainbarriers-demo")
        fresh.ui.deviceComboBox.currentIndex = fresh.ui.deviceComboBox.findData("cpu")
    else:
        load_patient(tmp_path, "Patient")
    fresh.click(fresh.ui.applyButton)
    fresh.wait_idle()
    fresh.ui.logCollapsibleButton.collapsed = True
    widget = fresh.qwidget
    widget.resize(460, 760)
    widget.show()
    harness.process_events(0.2)
    height = max(widget.sizeHint.height(), widget.layout().totalHeightForWidth(460))  # word-wrapped labels
    widget.resize(460, height)  # PythonQt: sizeHint is a property
    harness.process_events(0.2)
    image = widget.grab().toImage()
    assert image.width() >= 440
    colours = {image.pixel(x, y) for x in range(0, image.width(), 5) for y in range(0, image.height(), 5)}
    assert len(colours) > 20
    if target:  # regenerate SlicerBrainBarriers/Resources/Screenshots/panel.png on request
        assert image.save(target)
    widget.hide()



class _SlowHandler(http.server.BaseHTTPRequestHandler):
    """Serves one zip in small chunks with pauses, so a download takes a few seconds."""

    data = b""
    pause = 0.05

    def do_GET(self):  # noqa: N802
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(self.data) - 1}/{len(self.data)}")
        self.send_header("Content-Length", str(len(self.data) - start))
        self.end_headers()
        try:
            for i in range(start, len(self.data), 32768):
                self.wfile.write(self.data[i:i + 32768])
                self.wfile.flush()
                time.sleep(self.pause)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def published(tmp_path, monkeypatch):
    """A models index on a real HTTP server (127.0.0.1) with one downloadable tiny bundle."""
    src = write_tiny_bundle(tmp_path / "src", model_id="tiny-dl")
    zpath = tmp_path / "tiny-dl.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in sorted(src.iterdir()):
            zf.write(f, f"tiny-dl/{f.name}")
    _SlowHandler.data = zpath.read_bytes()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"schema_version": 1, "models": [{
        "id": "tiny-dl", "version": "0.0.1", "url": f"http://127.0.0.1:{httpd.server_address[1]}/tiny-dl.zip",
        "sha256": hashlib.sha256(_SlowHandler.data).hexdigest(), "size": len(_SlowHandler.data),
        "inputs": {"modalities": ["ct", "t1", "t2"]}, "timings": {"cpu_s": 1.0, "gpu_s": None}}]}))
    monkeypatch.setenv("BRAINBARRIERS_MODELS_INDEX", str(index))
    yield
    httpd.shutdown()
    httpd.server_close()


def test_model_download_shows_progress_and_cancels(fresh, harness, tmp_path, published):
    load_patient(tmp_path, "D")
    fresh.widget._fillModels()  # the panel lists the site's index
    fresh.select_model("tiny-dl")
    assert "not downloaded" in fresh.ui.modelComboBox.currentText
    progress = []
    fresh.ui.progressBar.connect("valueChanged(int)", progress.append)

    harness.user.will(True)  # "Download the model ...?" -> OK
    fresh.click(fresh.ui.applyButton)
    harness.wait_until(lambda: any(0 < p < 100 for p in progress), 60, "download progress")
    assert fresh.click(fresh.ui.applyButton) < 0.5  # Cancel
    assert "Cancelled" in fresh.ui.progressLabel.text
    harness.process_events(0.5)
    fresh.widget._fillModels()
    fresh.select_model("tiny-dl")
    assert "not downloaded" in fresh.ui.modelComboBox.currentText  # nothing half-installed

    _SlowHandler.pause = 0.0
    progress.clear()
    harness.user.will(True)
    fresh.click(fresh.ui.applyButton)
    fresh.wait_idle()
    assert fresh.ui.progressLabel.text.startswith("Done"), fresh.ui.logTextEdit.toPlainText()
    assert "tiny-dl 0.0.1" in fresh.ui.modelComboBox.currentText and "not downloaded" not in fresh.ui.modelComboBox.currentText
    kind, text = harness.user.seen[-1]
    assert "Download the model tiny-dl" in text


def test_dependency_install_runs_in_a_child_and_logs(fresh, harness, monkeypatch):
    """Install keeps the panel responsive and shows pip's output (the pip run itself is replaced:
    the shared test environment must not change)."""
    module = sys.modules["SlicerBrainBarriers"]
    deps = module.dependencies
    missing = deps.DependencyStatus(missing=["safetensors>=99"], torch_version="2.13.0")
    monkeypatch.setattr(deps, "check", lambda *a: missing)
    script = "import time\nfor line in ('Collecting safetensors', 'Installing', 'Successfully installed'):\n" \
             "    print(line, flush=True); time.sleep(0.3)\n"
    planned = []

    def commands(plan, python, constraints):
        planned.append((plan.packages, python))
        return [[sys.executable, "-c", script]]

    monkeypatch.setattr(deps, "pip_commands", commands)
    fresh.widget._updateDependencies()
    assert "Missing: safetensors>=99" in fresh.ui.dependencyLabel.text
    harness.user.will(True)  # "Install safetensors>=99? ..." -> OK
    assert fresh.click(fresh.ui.installButton) < 0.5
    assert fresh.ui.applyButton.text == "Cancel"  # busy, and the event loop runs
    monkeypatch.setattr(deps, "check", lambda *a: deps.DependencyStatus(missing=[], torch_version="2.13.0"))
    fresh.wait_idle(60)
    log = fresh.ui.logTextEdit.toPlainText()
    assert "Collecting safetensors" in log and "Successfully installed" in log
    assert fresh.ui.progressLabel.text == "Dependencies installed."
    assert planned == [(["safetensors>=99"], fresh.widget.logic.python)]
    assert "Slicer's own SimpleITK, vtk and numpy are left untouched" in harness.user.seen[-1][1]


def test_closing_the_scene_cancels_a_run(fresh, harness, tmp_path):
    import slicer

    load_patient(tmp_path, "X")
    fresh.click(fresh.ui.applyButton)
    run = fresh.widget.jobs[-1].run
    harness.new_scene()
    assert fresh.idle() and "scene was closed" in fresh.ui.progressLabel.text
    harness.wait_until(lambda: run.process.ended, 30, "the child to end")
    harness.process_events(0.3)
    assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0


# --- Export to DICOM ------------------------------------------------------------------------------
def _replace_segment_with_box(node, reference_nrrd: Path, key: str, box: tuple, tmp_path: Path):
    """Edit a segment as a user would: its voxels become ``box`` (index ranges k, j, i); returns the mask."""
    import numpy as np
    import SimpleITK as sitk
    import slicer
    from SlicerBrainBarriersLib import scene_io, segments

    reference = sitk.ReadImage(str(reference_nrrd))
    mask = np.zeros(sitk.GetArrayViewFromImage(reference).shape, np.uint8)
    mask[box] = 1
    image = sitk.GetImageFromArray(mask)
    image.CopyInformation(reference)
    sitk.WriteImage(image, str(tmp_path / f"{key}_edit.nrrd"))
    labelmap = segments.binary_segment_image(scene_io.read_label_map(tmp_path / f"{key}_edit.nrrd"), 1)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    assert logic.SetBinaryLabelmapToSegment(labelmap, node, f"BrainBarriers_{key}", logic.MODE_REPLACE)
    return mask.astype(bool)


def test_export_to_dicom_after_a_run_includes_the_edit(fresh, harness, tmp_path):
    import highdicom as hd
    import numpy as np
    import pydicom
    import slicer

    patient = load_dicom_patient(harness, tmp_path / "in", "DP")
    ui = fresh.widget.ui
    for modality, selector in (("ct", ui.ctSelector), ("t1", ui.t1Selector), ("t2", ui.t2Selector)):
        selector.setCurrentNode(patient[modality])
    assert patient["ct"].GetName() == "2: DP CT head"  # named as the DICOM browser names a series
    assert not ui.exportDicomButton.enabled and "Segment first" in ui.exportDicomButton.toolTip
    fresh.click(ui.applyButton)
    fresh.wait_idle()
    assert ui.progressLabel.text.startswith("Done"), ui.logTextEdit.toPlainText()
    node, reference = fresh.widget.result
    assert reference is patient["ct"] and ui.outputSegmentationSelector.currentNode() is None
    assert ui.exportDicomButton.enabled  # re-checked when the run finished: the last result is exported

    ventricles = _replace_segment_with_box(node, tmp_path / "in" / "DP_ct.nrrd", "ventricles",
                                           (slice(10, 16), slice(12, 20), slice(9, 19)), tmp_path)
    out = tmp_path / "out"
    harness.user.will(str(out))  # the folder chosen with the path edit's browse button
    ui.dicomFolderPathLineEdit.browse()
    assert ui.dicomFolderPathLineEdit.currentPath == str(out)
    ui.addToDatabaseCheckBox.checked = True
    source_before = sorted((p.name, p.stat().st_mtime_ns) for p in patient["dicom"].iterdir())
    fresh.click(ui.exportDicomButton)

    from SlicerBrainBarriersLib import dicom_export

    paths = dicom_export.output_paths(node, out)
    assert all(p.is_file() for p in paths.values()), ui.logTextEdit.toPlainText()
    log = ui.logTextEdit.toPlainText()
    assert all(f"Wrote {p}" in log for p in paths.values())
    assert ui.progressLabel.text.startswith(f"Exported {node.GetName()} to {out} and the DICOM database")
    assert sorted((p.name, p.stat().st_mtime_ns) for p in patient["dicom"].iterdir()) == source_before
    source = pydicom.dcmread(patient["dicom"] / "CT0000.dcm", stop_before_pixels=True)

    seg = hd.seg.segread(paths["dicom_seg"])
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.SeriesInstanceUID != source.SeriesInstanceUID
    pixels = seg.get_pixels_by_source_instance(patient["uids"])
    numbers = {d.SegmentLabel: d.SegmentNumber for d in seg.SegmentSequence}
    kinds = {d.SegmentLabel: d.SegmentAlgorithmType for d in seg.SegmentSequence}
    assert np.array_equal(pixels[..., numbers["Ventricles"] - 1].astype(bool), ventricles)  # the edit, voxel-exact
    assert kinds["Ventricles"] == "SEMIAUTOMATIC"
    assert {kinds[lab.name] for lab in OUTPUT_LABELS if lab.key != "ventricles" and lab.name in kinds} <= {"AUTOMATIC"}

    rt = pydicom.dcmread(paths["rtstruct"])
    series = rt.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == source.SeriesInstanceUID
    rois = {r.ROINumber: r.ROIName for r in rt.StructureSetROISequence}
    kinds = {r.ROIName: r.ROIGenerationAlgorithm for r in rt.StructureSetROISequence}
    assert kinds["Ventricles"] == "SEMIAUTOMATIC"
    contours = next(c for c in rt.ROIContourSequence if rois[c.ReferencedROINumber] == "Ventricles")
    slices = {c.ContourImageSequence[0].ReferencedSOPInstanceUID for c in contours.ContourSequence}
    assert slices == set(patient["uids"][10:16])  # contours on exactly the edited slices

    database = slicer.dicomDatabase  # added to the DICOM database, source series untouched there
    assert database.fileForInstance(str(seg.SOPInstanceUID)) and database.fileForInstance(str(rt.SOPInstanceUID))
    assert all(database.fileForInstance(uid) for uid in patient["uids"])

    before = {p: p.stat().st_mtime_ns for p in paths.values()}
    harness.user.will(False)  # "Replace ... ?" -> Cancel: nothing is overwritten
    fresh.click(ui.exportDicomButton)
    assert "Replace" in harness.user.seen[-1][1] and {p: p.stat().st_mtime_ns for p in paths.values()} == before


def _labels_result(patient, tmp_path):
    """A result imported into the scene without a run (the fast way to a segmentation)."""
    import numpy as np
    import SimpleITK as sitk
    import slicer
    from SlicerBrainBarriersLib import scene_io, segments

    reference = sitk.ReadImage(str(tmp_path / "in" / "DP_ct.nrrd"))
    labels = np.zeros(sitk.GetArrayViewFromImage(reference).shape, np.uint8)
    for n, lab in enumerate(OUTPUT_LABELS):
        labels[4 + 3 * n: 6 + 3 * n, 10:20, 8:20] = lab.value
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(reference)
    sitk.WriteImage(image, str(tmp_path / "labels.nrrd"))
    return segments.import_labels(slicer.mrmlScene, scene_io.read_label_map(tmp_path / "labels.nrrd"), OUTPUT_LABELS,
                                  patient["ct"], model="tiny-test@0.0.1").node


def test_export_to_dicom_needs_a_volume_from_the_dicom_database(fresh, harness, tmp_path):
    patient = load_dicom_patient(harness, tmp_path / "in", "DP")
    other = load_patient(tmp_path / "nrrd", "NR", modalities=("ct",))["ct"]
    node = _labels_result(patient, tmp_path)
    ui = fresh.widget.ui
    ui.ctSelector.setCurrentNode(other)
    ui.outputSegmentationSelector.setCurrentNode(node)
    assert not ui.exportDicomButton.enabled
    assert "not loaded from the DICOM database" in ui.exportDicomButton.toolTip
    ui.ctSelector.setCurrentNode(patient["ct"])  # the input change empties Output: nothing to export
    assert not ui.exportDicomButton.enabled
    ui.outputSegmentationSelector.setCurrentNode(node)
    assert ui.exportDicomButton.enabled and patient["ct"].GetName() in ui.exportDicomButton.toolTip
    ui.dicomFolderPathLineEdit.currentPath = str(patient["dicom"])  # a refusal is said, the panel stays usable
    before = sorted(p.name for p in patient["dicom"].iterdir())
    fresh.click(ui.exportDicomButton)
    assert "holds the source images" in ui.progressLabel.text and sorted(p.name for p in patient["dicom"].iterdir()) == before
    ui.ctSelector.setCurrentNode(None)  # T1 then T2 would be the reference: both are NRRD files
    ui.outputSegmentationSelector.setCurrentNode(node)
    assert not ui.exportDicomButton.enabled


def test_export_to_dicom_offers_the_dicom_libraries_first(fresh, harness, tmp_path, monkeypatch):
    module = sys.modules["SlicerBrainBarriers"]
    deps = module.dependencies
    patient = load_dicom_patient(harness, tmp_path / "in", "DP")
    node = _labels_result(patient, tmp_path)
    ui = fresh.widget.ui
    ui.ctSelector.setCurrentNode(patient["ct"])
    ui.outputSegmentationSelector.setCurrentNode(node)
    out = tmp_path / "out"
    ui.dicomFolderPathLineEdit.currentPath = str(out)
    ui.rtstructCheckBox.checked = False
    real_check = deps.check
    asked = []

    def check(requirements=deps.CORE_REQUIREMENTS):
        asked.append(tuple(requirements))
        if tuple(requirements) == module.dicom_export.DICOM_REQUIREMENTS:
            return deps.DependencyStatus(missing=["highdicom>=0.25"], torch_version="2.13.0")
        return real_check(requirements)

    monkeypatch.setattr(deps, "check", check)
    monkeypatch.setattr(deps, "pip_commands", lambda plan, python, constraints: [[sys.executable, "-c", "print('pip ran')"]])
    harness.user.will(False)  # "Install highdicom>=0.25? ..." -> Cancel: nothing is written
    fresh.click(ui.exportDicomButton)
    assert "Install highdicom>=0.25?" in harness.user.seen[-1][1] and not out.exists()
    assert module.dicom_export.DICOM_REQUIREMENTS in asked

    harness.user.will(True)  # OK: pip runs in a child, then the export goes on by itself
    fresh.click(ui.exportDicomButton)
    fresh.wait_idle(60)
    assert "pip ran" in ui.logTextEdit.toPlainText()
    assert sorted(p.name for p in out.iterdir()) == [f"{module.dicom_export.case_name(node)}_seg.dcm"], ui.logTextEdit.toPlainText()
    assert ui.progressLabel.text.startswith("Exported")


def _slice_views():
    """The three slice views' nodes as Slicer's layout creates them (the harness has no layout manager)."""
    import slicer

    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(slicer.mrmlScene)
    views = {}
    for name, orientation in (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal")):
        slice_node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceNode")
        slice_node.SetLayoutName(name)
        getattr(slice_node, f"SetOrientationTo{orientation}")()
        composite = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
        composite.SetLayoutName(name)
        views[name] = (slice_node, composite)
    return views


def _centre(views) -> tuple[float, float, float]:
    """The RAS point the three orthogonal views go through (their slice offsets)."""
    red, yellow, green = (views[n][0].GetSliceToRAS() for n in ("Red", "Yellow", "Green"))
    return yellow.GetElement(0, 3), green.GetElement(1, 3), red.GetElement(2, 3)


def test_review_after_a_run_with_uncertainty(fresh, harness, tmp_path):
    """A run of the random tiny bundle with Uncertainty ticked: its low-confidence flags fill the
    table and the log, Next flagged and a double-click move the slice views, the uncertainty volume
    is the foreground at 40%, and the review controls follow the segment status."""
    import numpy as np
    import slicer
    from SlicerBrainBarriersLib import review

    ui = fresh.ui
    assert not ui.nextFlaggedButton.enabled and not ui.saveCaseButton.enabled and not ui.showUncertaintyCheckBox.enabled
    assert ui.flagsTableWidget.rowCount == 0 and ui.flaggedLabel.text == "No result yet."
    load_patient(tmp_path, "U")
    views = _slice_views()
    ui.uncertaintyCheckBox.checked = True
    assert fresh.widget._parameterNode.uncertainty is True  # saved with the scene, like the other choices
    fresh.click(ui.applyButton)
    fresh.wait_idle()
    log = ui.logTextEdit.toPlainText()
    assert ui.progressLabel.text.startswith("Done") and "flagged" in ui.progressLabel.text, log
    assert "--uncertainty" in log

    node = fresh.widget.result[0]
    flagged = review.flagged_segments(node)
    assert flagged and all(flags for _, flags in flagged)
    assert ui.flaggedLabel.text.startswith(f"{len(flagged)} segment{'s' if len(flagged) > 1 else ''} flagged")
    for line in review.flag_messages(node):
        assert f"Flagged: {line}" in log
    rows = [(node.GetSegmentation().GetSegment(s).GetName(), f["kind"], f["reason"]) for s, flags in flagged for f in flags]
    table = ui.flagsTableWidget
    assert table.rowCount == len(rows)
    assert [tuple(table.item(r, c).text() for c in range(3)) for r in range(table.rowCount)] == rows
    assert {f["kind"] for _, flags in flagged for f in flags} & {"confidence", "missing", "volume"}
    first_segment = node.GetSegmentation().GetSegment(flagged[0][0])
    assert table.item(0, 2).toolTip() == review.flag_tooltip(first_segment) != ""

    # the uncertainty volume: its own node on the reference grid, the foreground of every view at 40%
    u = fresh.widget.uncertaintyNode
    assert u is not None and u.GetScene() is slicer.mrmlScene
    assert u.GetImageData().GetDimensions() == fresh.widget.result[1].GetImageData().GetDimensions()
    assert ui.showUncertaintyCheckBox.enabled and ui.showUncertaintyCheckBox.checked
    for _, composite in views.values():
        assert composite.GetForegroundVolumeID() == u.GetID() and composite.GetForegroundOpacity() == pytest.approx(0.4)
    ui.showUncertaintyCheckBox.checked = False
    assert all(composite.GetForegroundVolumeID() is None for _, composite in views.values())
    ui.showUncertaintyCheckBox.checked = True
    assert all(composite.GetForegroundVolumeID() == u.GetID() for _, composite in views.values())

    # Next flagged: each click centres the three views on the next flagged segment, round and round
    assert ui.nextFlaggedButton.enabled
    ids = [s for s, _ in flagged]
    centres = {s: review.segment_centre(node, s) for s in ids}  # None: empty (a missing structure)
    assert any(c is not None for c in centres.values())
    for expected in ids + ids[:1]:
        before = _centre(views)
        fresh.click(ui.nextFlaggedButton)
        assert fresh.widget.currentFlagged == expected
        assert np.allclose(_centre(views), centres[expected] or before, atol=1e-3)
        assert table.item(table.currentRow(), 0).data(0x0100) == expected  # Qt.UserRole: the selected row
        if centres[expected] is None:
            assert "is empty: nothing to centre the views on" in ui.logTextEdit.toPlainText()

    # a double-click on a row selects the segment in Segment Editor and centres the views on it
    fresh.click(ui.segmentEditorButton)
    editor = slicer.modules.SegmentEditorWidget.editor
    target = next(s for s in reversed(ids) if centres[s] is not None and s != fresh.widget.currentFlagged)
    row = next(r for r in range(table.rowCount) if table.item(r, 0).data(0x0100) == target)
    table.cellDoubleClicked.emit(row, 2)
    harness.raise_slot_errors()
    assert editor.currentSegmentID() == target and fresh.widget.currentFlagged == target
    assert np.allclose(_centre(views), centres[target], atol=1e-3)

    # once the user marks every flagged segment reviewed, nothing is left to jump to
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    for segment_id in ids:
        logic.SetSegmentStatus(node.GetSegmentation().GetSegment(segment_id), logic.Completed)
        if segment_id != ids[-1]:  # the table follows the status as it changes
            assert table.rowCount == sum(len(f) for s, f in flagged[ids.index(segment_id) + 1:])
    assert table.rowCount == 0 and ui.flaggedLabel.text.startswith("No segment flagged")
    assert not ui.nextFlaggedButton.enabled


def test_save_case_for_training_writes_site_data_and_lists_the_edits(fresh, harness, tmp_path):
    import numpy as np
    import SimpleITK as sitk

    nodes = load_patient(tmp_path / "in", "T")
    ui = fresh.ui
    fresh.click(ui.applyButton)
    fresh.wait_idle()
    assert ui.progressLabel.text.startswith("Done"), ui.logTextEdit.toPlainText()
    assert ui.saveCaseButton.enabled and not ui.showUncertaintyCheckBox.enabled  # no uncertainty asked for
    node = fresh.widget.result[0]
    box = _replace_segment_with_box(node, tmp_path / "in" / "T_ct.nrrd", "ventricles",
                                    (slice(10, 16), slice(12, 20), slice(9, 19)), tmp_path)
    site = tmp_path / "site"
    harness.user.will(str(site))  # no folder yet: the button opens the folder picker
    fresh.click(ui.saveCaseButton)
    assert ui.trainingFolderPathLineEdit.currentPath == str(site)
    case = site / "001"
    assert sorted(p.name for p in case.iterdir()) == ["001_ct.mha", "001_labelmap_task1.mha", "001_provenance.json",
                                                     "001_t1.mha", "001_t2.mha"], ui.logTextEdit.toPlainText()
    provenance = json.loads((case / "001_provenance.json").read_text())
    assert provenance["edited"] == ["ventricles"] and provenance["model"]["id"] == "tiny-test"
    assert provenance["model"]["sha256"]  # the installed bundle's manifest
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "001_labelmap_task1.mha")))
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "001_ct.mha")))
    assert labels.shape == ct.shape == sitk.GetArrayViewFromImage(sitk.ReadImage(str(tmp_path / "in" / "T_ct.nrrd"))).shape
    from brainbarriers.structures import output_label

    assert np.array_equal(labels == output_label("ventricles").value, box)
    log = ui.logTextEdit.toPlainText()
    assert f"Saved case {case}" in log and "Edited segments: Ventricles" in log
    assert ui.progressLabel.text.startswith("Saved case 001")

    # again into the same folder: asks; Cancel leaves the case as it was, OK replaces it (no 002)
    before = {p.name: p.stat().st_mtime_ns for p in case.iterdir()}
    harness.user.will(False)
    fresh.click(ui.saveCaseButton)
    assert "Replace it?" in harness.user.seen[-1][1] and "001" in harness.user.seen[-1][1]
    assert {p.name: p.stat().st_mtime_ns for p in case.iterdir()} == before
    harness.user.will(True)
    fresh.click(ui.saveCaseButton)
    assert sorted(p.name for p in site.iterdir()) == ["001"]
    assert json.loads((case / "001_provenance.json").read_text())["date"] >= provenance["date"]
    assert nodes["ct"].GetScene() is not None  # the inputs stay in the scene untouched
