"""The module's logic: inputs out to files, the pipeline in a child process, the result back in.

No Qt here: everything runs on slicer-core in tests and scripts. Non-blocking use (the widget):
``run = logic.start(params)``; poll ``run.process.poll()`` from a timer; when ``run.state`` is
"done" call ``logic.finish(run, ask)``; ``logic.cancel(run)`` stops it. Blocking use (scripts,
tests, the self-test): ``logic.segment(params)``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from brainbarriers.structures import MODALITIES, OUTPUT_LABELS, output_label

from . import review, scene_io, segments
from .process import PipelineProcess, ProgressEvent, python_executable

#: Folder holding the bundled core package ``brainbarriers`` (source tree and installed module alike).
MODULE_DIR = Path(__file__).resolve().parents[1]

_NAME_PATTERNS = {
    "ct": re.compile(r"(?<![a-z0-9])(ct|cta|cect)(?![a-z0-9])"),
    "t1": re.compile(r"(?<![a-z0-9])(t1|t1w|t1c|t1ce|mprage)(?![a-z0-9])"),
    "t2": re.compile(r"(?<![a-z0-9])(t2|t2w)(?![a-z0-9])"),
}


class Cancelled(Exception):
    """The run was cancelled; the scene is as it was."""


class PipelineFailed(Exception):
    """The pipeline process failed; the message is its one-line error."""


@dataclass
class SegmentParameters:
    """Everything one run needs.

    Attributes:
        inputs: modality ("ct", "t1", "t2") -> volume node; at least one.
        model: --model value (bundle id, id@version or folder).
        device: "auto", "cpu", "cuda" or "mps".
        structures: output-label keys to produce (empty = all).
        quality: "fast" or "full" (full adds flip test-time augmentation and the left-right check).
        uncertainty: also load the per-voxel uncertainty volume.
        target: segmentation node to update, or None to create a new one.
        register: rigidly co-register the MR inputs to the reference (--register).
    """

    inputs: dict = field(default_factory=dict)
    model: str = "brainbarriers-demo"
    device: str = "auto"
    structures: list[str] = field(default_factory=list)
    quality: str = "fast"
    target: object = None
    register: bool = False
    uncertainty: bool = False

    def modalities(self) -> list[str]:
        return [m for m in MODALITIES if self.inputs.get(m) is not None]


    def reference_modality(self) -> str:
        present = [m for m in MODALITIES if self.inputs.get(m) is not None]
        if not present:
            raise ValueError("select at least one input volume (CT, T1 or T2)")
        return present[0]

    def labels(self):
        keys = self.structures or [lab.key for lab in OUTPUT_LABELS]
        return [output_label(k) for k in keys]


@dataclass
class SegmentationRun:
    """One started run: the child process and the files it works in."""

    process: PipelineProcess
    params: SegmentParameters
    workdir: Path
    reference_node: object

    @property
    def state(self) -> str:
        return self.process.state


def guess_inputs(names: list[str]) -> dict[str, str | None]:
    """Modality -> the one name that looks like it (None when no name or several names do)."""
    guesses: dict[str, str | None] = {}
    for modality, pattern in _NAME_PATTERNS.items():
        matches = [n for n in names if pattern.search(n.lower().replace(" ", "_"))]
        guesses[modality] = matches[0] if len(matches) == 1 else None
    return guesses


class BrainBarriersLogic:
    """Runs the core pipeline for Slicer volumes and imports the result.

    Args:
        scene: the MRML scene.
        python: interpreter for the child process (default: PythonSlicer inside Slicer, else this one).
        command_prefix: program + arguments that start the core command line (default
            ``[python, "-m", "brainbarriers"]``).
    """

    def __init__(self, scene, python: str | None = None, command_prefix: list[str] | None = None) -> None:
        self.scene = scene
        self._python = python
        self._command_prefix = command_prefix

    @property
    def python(self) -> str:
        """Interpreter of the child processes, found when first needed (a missing PythonSlicer
        is reported when the user starts something, not while the panel opens)."""
        if self._python is None:
            self._python = python_executable()
        return self._python

    @property
    def command_prefix(self) -> list[str]:
        return self._command_prefix or [self.python, "-m", "brainbarriers"]

    # -- inputs -------------------------------------------------------------------------------
    def volume_nodes(self) -> list:
        return [n for n in nodes_by_class(self.scene, "vtkMRMLScalarVolumeNode") if not n.IsA("vtkMRMLLabelMapVolumeNode")]

    def guess_input_nodes(self) -> dict:
        """Modality -> volume node, filled only where the node names are unambiguous."""
        nodes = self.volume_nodes()
        by_name: dict[str, list] = {}
        for n in nodes:
            by_name.setdefault(n.GetName(), []).append(n)
        guesses = guess_inputs(list(by_name))
        return {m: (by_name[g][0] if g and len(by_name[g]) == 1 else None) for m, g in guesses.items()}

    # -- running ------------------------------------------------------------------------------
    def command(self, params: SegmentParameters, files: dict[str, Path], output: Path) -> list[str]:
        cmd = [*self.command_prefix, "segment"]
        for modality in MODALITIES:
            if modality in files:
                cmd += [f"--{modality}", str(files[modality])]
        cmd += ["--output", str(output), "--model", params.model, "--device", params.device]
        cmd += ["--quality", params.quality, "--progress", "json", "--case", "case"]
        if params.register:
            cmd += ["--register"]
        if params.uncertainty:
            cmd.append("--uncertainty")
        if params.structures and len(params.structures) < len(OUTPUT_LABELS):
            cmd += ["--structures", *params.structures]
        return cmd

    def environment(self) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(MODULE_DIR), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self, params: SegmentParameters) -> SegmentationRun:
        """Write the inputs to a temp folder and start the pipeline; the scene is not changed."""
        reference = params.reference_modality()
        params.labels()  # unknown structure keys fail here, before anything starts
        workdir = Path(tempfile.mkdtemp(prefix="BrainBarriers-"))
        try:
            files = {}
            for modality in MODALITIES:
                node = params.inputs.get(modality)
                if node is not None:
                    files[modality] = scene_io.export_volume(node, workdir / f"{modality}.nrrd")
            output = workdir / "output"
            process = PipelineProcess(self.command(params, files, output), env=self.environment(), cwd=str(workdir))
        except Exception:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        return SegmentationRun(process, params, workdir, params.inputs[reference])

    def start_download(self, model: str) -> PipelineProcess:
        """Download, verify and install a model of the index (``brainbarriers models download``)."""
        return PipelineProcess(
            [*self.command_prefix, "models", "download", model], env=self.environment(), expect_result=False
        )

    def cancel(self, run: SegmentationRun, wait: bool = True) -> None:
        """Stop the process tree and delete its files; nothing was added to the scene.

        ``wait=False`` (the widget) returns at once; the tree is ended and the files are deleted
        on a background thread.
        """
        workdir = run.workdir
        run.process.cancel(wait=wait, on_ended=lambda: shutil.rmtree(workdir, ignore_errors=True))

    def finish(self, run: SegmentationRun, ask: segments.AskCallback | None = None) -> segments.ImportSummary:
        """Import a finished run's label map (new node, or update of ``params.target``)."""
        try:
            run.process.poll()
            if run.state != "done":
                raise PipelineFailed(run.process.failure_message())
            outputs = run.process.result.outputs
            label_image = scene_io.read_label_map(outputs["labels"])
            report = _read_json(outputs.get("report"))
            reference = run.params.inputs.get(report.get("reference")) or run.reference_node
            model = report.get("model") if isinstance(report.get("model"), dict) else {}
            model_tag = f"{model['id']}@{model.get('version', '')}" if model.get("id") else run.params.model
            target = run.params.target
            if target is not None and target.GetScene() is not self.scene:
                target = None  # deleted while the pipeline ran: make a new node rather than lose the result
            summary = segments.import_labels(
                self.scene,
                label_image,
                run.params.labels(),
                reference,
                target_node=target,
                ask=ask,
                model=model_tag,
                node_name=f"{reference.GetName()} brain barriers",
            )
            self.mark_flags(summary, report)
            if outputs.get("uncertainty"):
                summary.uncertainty = review.load_uncertainty(self.scene, outputs["uncertainty"],
                                                              f"{reference.GetName()} uncertainty")
            return summary
        finally:
            shutil.rmtree(run.workdir, ignore_errors=True)

    def mark_flags(self, summary: segments.ImportSummary, report: dict) -> None:
        """Set the report's quality flags on the segments this import wrote (not on kept ones)."""
        produced = summary.added + summary.replaced + summary.copied
        ids = {}
        for segment_id in produced:
            for lab in OUTPUT_LABELS:
                if segment_id == lab.segment_id or segment_id.startswith(lab.segment_id + "_"):
                    ids[lab.key] = segment_id
        summary.flagged = review.apply_flags(summary.node, review.report_flags(report), ids)

    def save_case_for_training(self, segmentation_node, inputs: dict, out_dir: str | Path, case: str | None = None,
                               overwrite: bool = False):
        """Inputs and the (edited) segmentation into a site data folder for fine-tuning (see site_data)."""
        from .site_data import save_case_for_training

        return save_case_for_training(segmentation_node, inputs, out_dir, case, overwrite)

    def segment(
        self,
        params: SegmentParameters,
        on_progress: Callable[[ProgressEvent], None] | None = None,
        ask: segments.AskCallback | None = None,
        timeout: float | None = None,
    ) -> segments.ImportSummary:
        """Blocking run for scripts and tests; raises Cancelled on timeout, PipelineFailed on error."""
        run = self.start(params)
        try:
            state = run.process.wait(timeout=timeout, on_event=on_progress)
        except BaseException:
            self.cancel(run)
            raise
        if state == "cancelled":
            self.cancel(run)
            raise Cancelled(f"segmentation stopped after {timeout} s")
        return self.finish(run, ask)


def nodes_by_class(scene, class_name: str) -> list:
    """Nodes of a class; releases the collection ``GetNodesByClass`` hands over (it is the
    caller's: without ``UnRegister`` every call keeps every node alive)."""
    collection = scene.GetNodesByClass(class_name)
    collection.UnRegister(None)
    return [collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems())]


def _read_json(path) -> dict:
    if not path:
        return {}
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
