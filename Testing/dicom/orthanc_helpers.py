"""A real Orthanc server for the tests: own config and storage in a temporary folder, random ports."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """``Orthanc`` started on 127.0.0.1 (HTTP and DICOM ports chosen free), REST calls with urllib."""

    def __init__(self, folder: Path, modalities: dict[str, list]) -> None:
        self.folder = folder
        self.http_port, self.dicom_port = free_port(), free_port()
        self.aet = "ORTHANC"
        config = {
            "Name": "brainbarriers-test", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": self.aet,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": True,
            "DicomModalities": modalities, "Plugins": [], "StorageCompression": False,
            "DicomScuTimeout": 60, "HttpTimeout": 120, "StableAge": 2,
        }
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "orthanc.json").write_text(json.dumps(config))
        self.log = open(folder / "orthanc.log", "w")
        self.proc = subprocess.Popen([shutil.which("Orthanc"), str(folder / "orthanc.json")], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while True:
            try:
                self.get("/system")
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("Orthanc did not start: " + (folder / "orthanc.log").read_text()[-2000:]) from None
                time.sleep(0.2)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def get(self, path: str):
        with urllib.request.urlopen(self.url(path), timeout=120) as r:
            return json.loads(r.read())

    def post(self, path: str, body: bytes | dict, timeout: float = 300):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.url(path), data=data, method="POST")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read() or b"null")

    def upload(self, folder: Path) -> list[str]:
        """POST every file of ``folder`` to /instances; returns the Orthanc instance ids in file order."""
        return [self.post("/instances", p.read_bytes())["ID"] for p in sorted(folder.iterdir())]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
