"""The storage node against a real Orthanc: receive a study, segment it, store SEG and RTSTRUCT back;
survive being killed mid-study without sending duplicates; report failed studies."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dicom_helpers import DEMO_MODEL, sample_image, write_series
from orthanc_helpers import Orthanc, free_port

pytestmark = pytest.mark.skipif(shutil.which("Orthanc") is None,
                                reason="Orthanc missing: run scripts/install_system_libs.sh")

NODE_AET = "BRAINBARRIERS"


def start_node(config: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "brainbarriers", "serve", "--config", str(config)],
                            stdout=open(log, "a"), stderr=subprocess.STDOUT, env=env)


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    import socket

    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "the node exited"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError("the node did not start listening")


def study_state(work: Path) -> dict:
    states = [json.loads(p.read_text()) for p in (work / "studies").glob("*/state.json")]
    assert len(states) <= 1
    return states[0] if states else {}


def wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def node_config(tmp_path: Path, orthanc: Orthanc, port: int, **changes) -> Path:
    config = {
        "ae_title": NODE_AET, "host": "127.0.0.1", "port": port, "work_dir": str(tmp_path / "work"),
        "quiet_seconds": 2, "model": str(DEMO_MODEL), "device": "cpu", "threads": 1,
        "outputs": ["seg", "rtstruct"], "min_slices": 8,
        "destination": {"ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port},
        **changes,
    }
    path = tmp_path / "node.json"
    path.write_text(json.dumps(config))
    return path


def test_orthanc_round_trip_with_kills(tmp_path):
    from pydicom.uid import generate_uid

    study_uid, frame_uid = generate_uid(), generate_uid()
    series = tmp_path / "series"
    ct_uids = write_series(sample_image("ct", shrink=2), series / "ct", "CT", study_uid, frame_uid, "CT head", 2)
    write_series(sample_image("ct", shrink=8), series / "scout", "CT", study_uid, frame_uid, "Scout", 1)
    node_port = free_port()
    orthanc = Orthanc(tmp_path / "orthanc", {"bb": [NODE_AET, "127.0.0.1", node_port]})
    node = None
    try:
        config = node_config(tmp_path, orthanc, node_port)
        work = tmp_path / "work"
        ids = orthanc.upload(series / "ct") + orthanc.upload(series / "scout")
        half = len(ids) // 2

        # 1. Kill while receiving: half of the study arrived.
        node = start_node(config, tmp_path / "node.log")
        wait_listening(node_port, node)
        orthanc.post("/modalities/bb/store", {"Resources": ids[:half], "Synchronous": True})
        assert study_state(work)["status"] == "receiving"
        node.kill()
        node.wait()

        # 2. Restart, send the rest, kill while it runs.
        node = start_node(config, tmp_path / "node.log")
        wait_listening(node_port, node)
        orthanc.post("/modalities/bb/store", {"Resources": ids[half:], "Synchronous": True})
        wait_for(lambda: study_state(work).get("status") == "running", 60, "the run to start")
        node.kill()
        node.wait()
        assert study_state(work)["status"] == "running"

        # 3. Restart: the study runs again and its objects reach Orthanc, once each.
        node = start_node(config, tmp_path / "node.log")
        wait_for(lambda: study_state(work).get("status") in ("done", "failed"), 180, "the study to finish")
        state = study_state(work)
        assert state["status"] == "done", (state, (tmp_path / "node.log").read_text()[-3000:])
        time.sleep(3)  # a duplicate would arrive now

        studies = orthanc.get("/studies?expand")
        assert len(studies) == 1 and studies[0]["MainDicomTags"]["StudyInstanceUID"] == study_uid
        by_modality: dict[str, list] = {}
        for s in orthanc.get(f"/studies/{studies[0]['ID']}/series?expand"):
            by_modality.setdefault(s["MainDicomTags"]["Modality"], []).append(s)
        assert len(by_modality["RTSTRUCT"]) == 1 and len(by_modality["RTSTRUCT"][0]["Instances"]) == 1
        assert len(by_modality["SEG"]) == 1 and len(by_modality["SEG"][0]["Instances"]) == 1
        ct_series_uid = next(s["MainDicomTags"]["SeriesInstanceUID"] for s in by_modality["CT"]
                             if s["MainDicomTags"].get("SeriesDescription") == "CT head")

        rt = orthanc.get(f"/instances/{by_modality['RTSTRUCT'][0]['Instances'][0]}/simplified-tags")
        frame = rt["ReferencedFrameOfReferenceSequence"][0]
        assert frame["FrameOfReferenceUID"] == frame_uid
        ref_series = frame["RTReferencedStudySequence"][0]["RTReferencedSeriesSequence"][0]
        assert ref_series["SeriesInstanceUID"] == ct_series_uid
        assert [i["ReferencedSOPInstanceUID"] for i in ref_series["ContourImageSequence"]] == ct_uids
        assert [r["ROIName"] for r in rt["StructureSetROISequence"]] == [
            "Cerebellum", "Falx cerebri", "Venous sinuses", "Tentorium cerebelli", "Ventricles"]
        seg = orthanc.get(f"/instances/{by_modality['SEG'][0]['Instances'][0]}/simplified-tags")
        assert seg["ReferencedSeriesSequence"][0]["SeriesInstanceUID"] == ct_series_uid
        assert seg["StudyInstanceUID"] == study_uid and rt["StudyInstanceUID"] == study_uid
        log = next((work / "studies").glob("*/study.log")).read_text()
        assert "node restarted during the run" in log and "inputs: ct='CT head'" in log

        # 4. The PACS sends the whole study again, our SEG and RTSTRUCT included: nothing runs again.
        orthanc.post("/modalities/bb/store", {"Resources": [studies[0]["ID"]], "Synchronous": True})
        time.sleep(4)  # longer than the quiet period
        assert study_state(work)["status"] == "done"
        series_now = orthanc.get(f"/studies/{studies[0]['ID']}/series?expand")
        assert sorted(s["MainDicomTags"]["Modality"] for s in series_now) == ["CT", "CT", "RTSTRUCT", "SEG"]
        assert all(len(s["Instances"]) == 1 for s in series_now if s["MainDicomTags"]["Modality"] != "CT")
        assert "ignored a SEG instance" in (work / "node.log").read_text()
    finally:
        if node is not None and node.poll() is None:
            node.send_signal(signal.SIGTERM)
            node.wait(timeout=30)
        orthanc.stop()


def test_unmatched_study_fails_and_is_reported(tmp_path):
    """A study without a usable series is kept as failed and listed; the node keeps serving."""
    import pydicom
    from pydicom.uid import generate_uid
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    series = tmp_path / "scout"
    write_series(sample_image("ct", shrink=8), series, "CT", generate_uid(), generate_uid(), "Localizer", 1)
    port = free_port()
    config = tmp_path / "node.json"
    config.write_text(json.dumps({
        "ae_title": NODE_AET, "host": "127.0.0.1", "port": port, "work_dir": "work", "quiet_seconds": 0.5,
        "model": str(DEMO_MODEL), "destination": {"ae_title": "NOWHERE", "host": "127.0.0.1", "port": free_port()},
    }))
    node = start_node(config, tmp_path / "node.log")
    try:
        wait_listening(port, node)
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(CTImageStorage, pydicom.uid.ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AET)
        assert assoc.is_established
        for p in sorted(series.iterdir()):
            assert assoc.send_c_store(pydicom.dcmread(p)).Status == 0
        assoc.release()
        work = tmp_path / "work"
        wait_for(lambda: study_state(work).get("status") == "failed", 60, "the study to fail")
        assert "no series matches" in study_state(work)["error"]
        listing = subprocess.run([sys.executable, "-m", "brainbarriers", "serve", "--config", str(config), "--list"],
                                 capture_output=True, text=True, timeout=60)
        assert listing.returncode == 0 and "failed" in listing.stdout and "1 failed" in listing.stdout
        assert "failed" in (work / "node.log").read_text().lower()
    finally:
        node.send_signal(signal.SIGTERM)
        assert node.wait(timeout=30) == 0


def test_bad_config_is_a_one_line_error(tmp_path):
    from dicom_helpers import assert_one_line_error, run_cli

    path = tmp_path / "node.json"
    path.write_text(json.dumps({"destination": {"ae_title": "X", "host": "h", "port": 104},
                                "series_rules": {"ct": {"modality": "CT", "include": "(unclosed"}}}))
    assert_one_line_error(run_cli("serve", "--config", str(path)), "series_rules.ct.include")
    path.write_text("{not json")
    assert_one_line_error(run_cli("serve", "--config", str(path)), "not valid JSON")
    path.write_text(json.dumps({"port": 5}))
    assert_one_line_error(run_cli("serve", "--config", str(path)), "destination")

    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path.write_text(json.dumps({"host": "127.0.0.1", "port": port, "work_dir": str(tmp_path / "w"),
                                    "destination": {"ae_title": "X", "host": "h", "port": 104}}))
        assert_one_line_error(run_cli("serve", "--config", str(path)), f"cannot listen on 127.0.0.1:{port}")


def test_series_rules_pick_the_largest_matching_series(tmp_path):
    from brainbarriers.dicom.config import SeriesInfo, parse_config, pick_series

    config = parse_config({"destination": {"ae_title": "PACS", "host": "h", "port": 104}})
    series = [
        SeriesInfo("1.1", "CT", "Topogram 0.6 T20s", 2, tmp_path), SeriesInfo("1.2", "CT", "Head 5mm", 40, tmp_path),
        SeriesInfo("1.3", "CT", "Head 1mm", 160, tmp_path), SeriesInfo("1.4", "CT", "Head 1mm BONE", 160, tmp_path),
        SeriesInfo("1.5", "MR", "t1_mprage_sag_Gd", 176, tmp_path), SeriesInfo("1.6", "MR", "t2_flair_tra", 30, tmp_path),
        SeriesInfo("1.7", "MR", "localizer", 30, tmp_path), SeriesInfo("1.8", "MR", "T1 localizer", 30, tmp_path),
    ]
    chosen = pick_series(series, config.rules, config.min_slices)
    assert {m: s.uid for m, s in chosen.items()} == {"ct": "1.3", "t1": "1.5", "t2": "1.6"}
    assert pick_series(series[:2], config.rules, config.min_slices) == {"ct": series[1]}
    assert pick_series([series[0], series[6]], config.rules, config.min_slices) == {}


def test_one_study_never_runs_twice_at_once(tmp_path):
    from brainbarriers.dicom.node import StudyLock

    with StudyLock(tmp_path):
        with pytest.raises(BlockingIOError):
            with StudyLock(tmp_path):
                pass
        other = subprocess.run([sys.executable, "-c", (
            "import sys; from pathlib import Path; from brainbarriers.dicom.node import StudyLock\n"
            "try:\n    StudyLock(Path(sys.argv[1])).__enter__()\nexcept BlockingIOError:\n    sys.exit(3)\n"),
            str(tmp_path)], env={**os.environ}, timeout=60)
        assert other.returncode == 3  # another node process on the same work folder is kept out too
    with StudyLock(tmp_path):
        pass


def test_restart_while_sending_resends_the_same_objects(tmp_path):
    """A study cut off while sending: after a restart the node sends the objects it wrote, not new
    ones, and keeps trying while the destination is down."""
    import numpy as np
    import pydicom
    import SimpleITK as sitk
    from brainbarriers.dicom.common import AlgorithmInfo
    from brainbarriers.dicom.config import parse_config
    from brainbarriers.dicom.node import StorageNode
    from brainbarriers.dicom.rtstruct import write_rtstruct
    from brainbarriers.dicom.seg import write_seg
    from brainbarriers.dicom.series import load_source_series
    from pydicom.uid import generate_uid
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import RTStructureSetStorage, SegmentationStorage

    image = sample_image("ct", shrink=8)
    study_uid = generate_uid()
    write_series(image, tmp_path / "src", "CT", study_uid, generate_uid(), "CT", 2)
    labels = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8)
    labels[4:8, 5:9, 6:12] = 1
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(image)
    series = load_source_series(tmp_path / "src")

    received: list[str] = []

    def on_store(event):
        received.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    port = free_port()
    config = parse_config({"work_dir": str(tmp_path / "work"), "quiet_seconds": 0, "retry_seconds": 0,
                           "destination": {"ae_title": "PACS", "host": "127.0.0.1", "port": port}})
    node = StorageNode(config)
    server = None
    try:
        folder = node.store.folder(study_uid)
        (folder / "outputs").mkdir(parents=True)
        objects = [folder / "outputs" / "study_seg.dcm", folder / "outputs" / "study_rtstruct.dcm"]
        algorithm = AlgorithmInfo("m", "1", "0" * 64)
        write_seg(objects[0], series, label_image, [1], algorithm)
        write_rtstruct(objects[1], series, label_image, [1], algorithm)
        node.store.update(study_uid, status="sending", objects=[str(p) for p in objects])
        node.restore()
        # The destination is down: the study stays "sending" and is tried again.
        assert node.run_due() == study_uid
        state = node.store.state(study_uid)
        assert state["status"] == "sending" and state["send_attempts"] == 1 and "cannot associate" in state["error"]
        pacs = AE(ae_title="PACS")
        for context in (RTStructureSetStorage, SegmentationStorage):
            pacs.add_supported_context(context)
        server = pacs.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
        assert node.run_due() == study_uid
        assert node.store.state(study_uid)["status"] == "done"
        assert received == [str(pydicom.dcmread(p).SOPInstanceUID) for p in objects]
        log = (folder / "study.log").read_text()
        assert "resending the written objects" in log and "attempt 1 of 5" in log
    finally:
        if server is not None:
            server.shutdown()
