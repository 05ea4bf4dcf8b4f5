"""``brainbarriers serve``: an auto-contouring DICOM storage node (pynetdicom).

Flow per study: C-STORE instances are written into the work folder
(``studies/<StudyInstanceUID>/instances/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``, each renamed
into place once complete); once no instance has arrived for ``quiet_seconds`` the study is
segmented (series picked by the configuration's rules, the same ``cases.run_case`` as the command
line, with the DICOM SEG and/or RTSTRUCT outputs), and the objects are sent to the destination AE.

State lives in ``studies/<uid>/state.json`` (status: receiving, running, sending, done, failed)
and every step is logged to ``studies/<uid>/study.log``, so the work folder survives restarts:

* a study that was receiving or running when the node stopped waits a new quiet period and runs
  again (nothing of an unfinished run was sent);
* a study that was sending resends the objects it already wrote (same SOP Instance UIDs, so the
  destination stores each object once, never a duplicate);
* a study whose objects the destination did not take is retried ``send_attempts`` times,
  ``retry_seconds`` apart, with the same objects;
* a failed study keeps its folder and log, is listed by ``serve --list`` and the node log, and is
  run again only when new instances of it arrive.

One worker thread runs the studies one after another, and a lock file held while a study runs
keeps a second node on the same work folder from running the same study at the same time.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import threading
import time
from pathlib import Path

from ..errors import BrainBarriersError, InputError
from .config import NodeConfig, SeriesInfo, pick_series

ACTIVE = ("receiving", "running", "sending")
_UID = re.compile(r"^[0-9.]{1,64}$")
log = logging.getLogger("brainbarriers.node")


class SendError(BrainBarriersError):
    """The destination could not be reached or refused an object (retried later)."""


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{path.name}")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class StudyStore:
    """The work folder's studies: instances, state and log of each."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root) / "studies"
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()

    def folder(self, uid: str) -> Path:
        if not _UID.match(uid):
            raise InputError(f"not a DICOM UID: {uid!r}")
        return self.root / uid

    def uids(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _UID.match(p.name))

    def state(self, uid: str) -> dict:
        path = self.folder(uid) / "state.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {"status": "receiving"}

    def update(self, uid: str, **changes) -> dict:
        with self._lock:
            state = {**self.state(uid), **changes, "updated": time.time()}
            _write_json(self.folder(uid) / "state.json", state)
            return state

    def log(self, uid: str, message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with self._lock, open(self.folder(uid) / "study.log", "a", encoding="utf-8") as f:
            f.write(f"{stamp} {message}\n")
        log.info("study %s: %s", uid, message)

    def add_instance(self, ds, file_meta) -> bool:
        """Store one received instance; False when it was already there (a re-send)."""
        study, series, sop = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
        if not (_UID.match(series) and _UID.match(sop)):
            raise InputError("instance with malformed UIDs")
        folder = self.folder(study) / "instances" / series
        path = folder / f"{sop}.dcm"
        with self._lock:
            fresh = not self.folder(study).exists()
            if path.exists():
                return False
            folder.mkdir(parents=True, exist_ok=True)
            incoming = self.folder(study) / "incoming"  # outside the series folders that readers scan
            incoming.mkdir(exist_ok=True)
            tmp = incoming / f"{sop}.part"
            ds.file_meta = file_meta
            ds.save_as(tmp, enforce_file_format=True)
            os.replace(tmp, path)
            status = self.state(study).get("status")
            if fresh or status != "receiving":
                self.update(study, status="receiving")
                self.log(study, "receiving instances" if fresh else f"new instances after status {status}")
        return True

    def series(self, uid: str) -> list[SeriesInfo]:
        import pydicom

        out = []
        for folder in sorted((self.folder(uid) / "instances").iterdir()):
            files = sorted(folder.glob("*.dcm"))
            if not files:
                continue
            ds = pydicom.dcmread(files[0], stop_before_pixels=True)
            out.append(SeriesInfo(folder.name, str(getattr(ds, "Modality", "")), str(getattr(ds, "SeriesDescription", "")),
                                  len(files), folder))
        return out


class StudyLock:
    """An exclusive, non-blocking lock on one study (a file lock: it also holds across processes)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / ".lock"
        self.handle = None

    def __enter__(self) -> StudyLock:
        self.handle = open(self.path, "a")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


class StorageNode:
    """The storage SCP, the study worker and the sender."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.store = StudyStore(config.work_dir)
        self._stop = threading.Event()
        self._last: dict[str, float] = {}  # study -> monotonic time of its last instance
        self._last_lock = threading.Lock()
        self._segmenter = None
        self._modalities = {rule.modality.upper() for rule in config.rules.values()}
        self._server = None
        self._worker: threading.Thread | None = None

    # --- receiving -------------------------------------------------------------------------------

    def _on_store(self, event) -> int:
        try:
            ds = event.dataset
            uid = str(ds.StudyInstanceUID)
            modality = str(getattr(ds, "Modality", "")).upper()
            if modality not in self._modalities:
                # Not an input of any rule (say our own SEG/RTSTRUCT forwarded back by the PACS):
                # accepted, not stored, so it can never start a run, let alone a loop of runs.
                log.info("study %s: ignored a %s instance", uid, modality or "modality-less")
                return 0x0000
            if not self.store.add_instance(ds, event.file_meta):
                return 0x0000  # already here: a re-sent instance changes nothing
        except Exception as exc:  # noqa: BLE001 - answer the SCU with a failure status, keep serving
            log.error("C-STORE refused: %s", exc)
            return 0xC210
        with self._last_lock:
            self._last[uid] = time.monotonic()
        return 0x0000

    def _on_echo(self, event) -> int:
        return 0x0000

    def restore(self) -> None:
        """Pick up the work folder: unfinished studies wait a quiet period and go on."""
        now = time.monotonic()
        for uid in self.store.uids():
            for part in (self.store.folder(uid) / "incoming").glob("*.part"):
                part.unlink()  # an instance whose transfer was cut off; the sender sends it again
            status = self.store.state(uid).get("status")
            if status in ACTIVE:
                if status == "running":
                    self.store.update(uid, status="receiving")
                    self.store.log(uid, "node restarted during the run; running again")
                elif status == "sending":
                    self.store.log(uid, "node restarted while sending; resending the written objects")
                with self._last_lock:
                    self._last[uid] = now
            elif status == "failed":
                log.warning("study %s failed earlier: %s", uid, self.store.state(uid).get("error"))

    def start(self) -> None:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        self.restore()
        ae = AE(ae_title=self.config.ae_title)
        # Compressed images too: the series are read by SimpleITK (GDCM), which decodes them.
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        ae.require_called_aet = True
        if self.config.allowed_callers:
            ae.require_calling_aet = list(self.config.allowed_callers)
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_C_ECHO, self._on_echo)]
        try:
            self._server = ae.start_server((self.config.host, self.config.port), block=False, evt_handlers=handlers)
        except OSError as exc:
            raise BrainBarriersError(f"cannot listen on {self.config.host}:{self.config.port} ({exc.strerror or exc})") from None
        self._worker = threading.Thread(target=self._work, name="brainbarriers-worker", daemon=True)
        self._worker.start()
        log.info("listening as %s on %s:%d; work folder %s", self.config.ae_title, self.config.host,
                 self.config.port, self.config.work_dir)

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
        if self._worker is not None:
            # A run cut short stays "running" and runs again after a restart.
            self._worker.join(timeout=2)

    # --- the worker ------------------------------------------------------------------------------

    def _due(self) -> str | None:
        now = time.monotonic()
        with self._last_lock:
            for uid, last in sorted(self._last.items(), key=lambda kv: kv[1]):
                if now - last >= self.config.quiet_seconds:
                    return uid
        return None

    def _work(self) -> None:
        while not self._stop.is_set():
            if self.run_due() is None:
                self._stop.wait(0.2)

    def run_due(self) -> str | None:
        """Run the study whose quiet period ended first, under its lock; returns its UID (None: none due)."""
        uid = self._due()
        if uid is None:
            return None
        with self._last_lock:
            self._last.pop(uid)
        try:
            with StudyLock(self.store.folder(uid)):
                self.process(uid)
        except BlockingIOError:
            self.store.log(uid, "another process is running this study; skipped")
        return uid

    def process(self, uid: str) -> None:
        """Run (or resend) one study; failures are recorded, never raised."""
        store = self.store
        state = store.state(uid)
        try:
            if state.get("status") == "sending" and state.get("objects"):
                objects = [Path(p) for p in state["objects"]]
            else:
                store.update(uid, status="running", error=None)
                objects = self._segment(uid)
                store.update(uid, status="sending", objects=[str(p) for p in objects], send_attempts=0)
            self._send(uid, objects)
        except Exception as exc:  # noqa: BLE001 - a failing study must not stop the node
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if not isinstance(exc, BrainBarriersError):
                message = f"{type(exc).__name__}: {message}"
            attempts = store.state(uid).get("send_attempts", 0) + 1
            if isinstance(exc, SendError) and attempts < self.config.send_attempts:
                # The destination may be down for a while: keep the objects and try again later.
                store.update(uid, status="sending", send_attempts=attempts, error=message)
                store.log(uid, f"sending failed ({message}); attempt {attempts} of {self.config.send_attempts}, "
                               f"next in {self.config.retry_seconds:g} s")
                with self._last_lock:
                    self._last[uid] = time.monotonic() + self.config.retry_seconds - self.config.quiet_seconds
                return
            store.update(uid, status="failed", error=message)
            store.log(uid, f"FAILED: {message}")
            log.error("study %s failed: %s (kept in %s)", uid, message, store.folder(uid))
            return
        with self._last_lock:
            again = uid in self._last  # instances arrived during the run: it runs again after the quiet period
        store.update(uid, status="receiving" if again else "done", error=None)
        store.log(uid, "done" if not again else "done, but new instances arrived: running again later")

    def _get_segmenter(self):
        if self._segmenter is None:
            from ..bundles import load_bundle
            from ..pipeline import Segmenter, SegmentOptions

            if self.config.threads:
                import torch

                torch.set_num_threads(int(self.config.threads))
            self._segmenter = Segmenter(load_bundle(self.config.model), self.config.device, SegmentOptions())
        return self._segmenter

    def _segment(self, uid: str) -> list[Path]:
        from ..cases import run_case
        from .outputs import dicom_outputs

        store = self.store
        series = store.series(uid)
        store.log(uid, "series: " + "; ".join(f"{s.modality} '{s.description}' ({s.count})" for s in series))
        chosen = pick_series(series, self.config.rules, self.config.min_slices)
        if not chosen:
            raise InputError("no series matches the CT/T1/T2 rules of the configuration")
        segmenter = self._get_segmenter()
        inputs = {role: s.folder for role, s in chosen.items()}
        usable = segmenter.bundle.used_modalities(list(inputs))
        inputs = {m: inputs[m] for m in usable}
        store.log(uid, "inputs: " + ", ".join(f"{m}={chosen[m].description!r}" for m in inputs))
        out = store.folder(uid) / "outputs"
        if out.exists():
            shutil.rmtree(out)
        extra = dicom_outputs(inputs, out, "study", "seg" in self.config.outputs, "rtstruct" in self.config.outputs)
        t0 = time.perf_counter()
        written = run_case(segmenter, inputs, out, "study", overwrite=True, extra=extra)
        store.log(uid, f"segmented in {time.perf_counter() - t0:.1f} s on {segmenter.runner.device}")
        return [Path(written[k]) for k in extra]

    def _send(self, uid: str, objects: list[Path]) -> None:
        import pydicom
        from pynetdicom import AE
        from pynetdicom.sop_class import RTStructureSetStorage, SegmentationStorage

        dest = self.config.destination
        ae = AE(ae_title=self.config.ae_title)
        for context in (RTStructureSetStorage, SegmentationStorage):
            ae.add_requested_context(context)
        assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)
        if not assoc.is_established:
            raise SendError(f"cannot associate with {dest.ae_title}@{dest.host}:{dest.port}")
        try:
            for path in objects:
                status = assoc.send_c_store(pydicom.dcmread(path))
                code = getattr(status, "Status", None)
                if code != 0x0000:
                    raise SendError(f"{dest.ae_title} refused {path.name} (status {code if code is None else hex(code)})")
                self.store.log(uid, f"sent {path.name} to {dest.ae_title}")
        finally:
            assoc.release()


def setup_logging(config: NodeConfig) -> None:
    """Node log lines on stderr and in ``<work_dir>/node.log``."""
    config.work_dir.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    for handler in (logging.StreamHandler(), logging.FileHandler(config.work_dir / "node.log", encoding="utf-8")):
        handler.setFormatter(fmt)
        log.addHandler(handler)
    log.setLevel(logging.INFO)


def study_table(config: NodeConfig) -> str:
    """The studies of the work folder with status and error (``serve --list``)."""
    store = StudyStore(config.work_dir)
    rows = [f"{'study':<64}  {'status':<9}  error"]
    for uid in store.uids():
        state = store.state(uid)
        rows.append(f"{uid:<64}  {state.get('status', '?'):<9}  {state.get('error') or ''}")
    failed = sum(store.state(u).get("status") == "failed" for u in store.uids())
    rows.append(f"{len(rows) - 1} studies, {failed} failed")
    return "\n".join(rows)


def serve(config: NodeConfig, stop: threading.Event | None = None) -> None:
    """Run the node until ``stop`` is set (or the process is signalled)."""
    node = StorageNode(config)
    node.start()
    try:
        while stop is None or not stop.is_set():
            time.sleep(0.2)
    finally:
        node.stop()
