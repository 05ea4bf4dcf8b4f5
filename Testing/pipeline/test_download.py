"""Downloads against a real HTTP server on 127.0.0.1: full, truncated, resumed, wrong hash, via the CLI."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import zipfile
from pathlib import Path

import pytest
from brainbarriers.bundles import download_file, load_bundle
from brainbarriers.errors import DownloadError
from pipeline_helpers import assert_one_line_error, run_cli
from tiny_bundle import write_tiny_bundle


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``files``; supports Range; ``truncate[name]`` = bytes sent before closing early."""

    files: dict[str, bytes] = {}
    truncate: dict[str, int] = {}
    log: list[dict] = []

    def do_GET(self):  # noqa: N802
        name = self.path.lstrip("/")
        data = self.files.get(name)
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        self.log.append({"path": name, "range": rng})
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = self.truncate.pop(name, None)
        self.wfile.write(body[:cut] if cut is not None else body)
        self.wfile.flush()
        if cut is not None:
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    _Handler.files, _Handler.truncate, _Handler.log = {}, {}, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler
    httpd.shutdown()
    httpd.server_close()


def test_download_full_truncated_resumed_and_wrong_hash(server, tmp_path):
    url, handler = server
    payload = bytes(range(256)) * 4000  # ~1 MB
    sha = hashlib.sha256(payload).hexdigest()
    handler.files["w.bin"] = payload
    # complete transfer
    out = download_file(f"{url}/w.bin", tmp_path / "a.bin", sha, len(payload))
    assert out.read_bytes() == payload and not (tmp_path / "a.bin.part").exists()
    # truncated transfer: error, partial kept as .part, nothing at the final name
    handler.truncate["w.bin"] = 300_000
    with pytest.raises(DownloadError, match="truncated|interrupted"):
        download_file(f"{url}/w.bin", tmp_path / "b.bin", sha, len(payload))
    part = tmp_path / "b.bin.part"
    assert part.exists() and 0 < part.stat().st_size < len(payload)
    assert not (tmp_path / "b.bin").exists()
    # resumed transfer asks for the rest only
    have = part.stat().st_size
    out = download_file(f"{url}/w.bin", tmp_path / "b.bin", sha, len(payload))
    assert out.read_bytes() == payload
    assert handler.log[-1]["range"] == f"bytes={have}-"
    # wrong hash: refused, nothing kept
    with pytest.raises(DownloadError, match="SHA-256"):
        download_file(f"{url}/w.bin", tmp_path / "c.bin", "0" * 64, len(payload))
    assert not (tmp_path / "c.bin").exists() and not (tmp_path / "c.bin.part").exists()
    # server error
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(f"{url}/missing.bin", tmp_path / "d.bin", sha, len(payload))


def _publish(tmp_path: Path, url: str, handler, sha_override: str | None = None) -> Path:
    src = write_tiny_bundle(tmp_path / "src", model_id="tiny-net", structures=["cerebellum"])
    zpath = tmp_path / "tiny-net.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in sorted(src.iterdir()):
            zf.write(f, f"tiny-net/{f.name}")
    data = zpath.read_bytes()
    handler.files["tiny-net.zip"] = data
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"schema_version": 1, "models": [{
        "id": "tiny-net", "version": "0.0.1", "url": f"{url}/tiny-net.zip",
        "sha256": sha_override or hashlib.sha256(data).hexdigest(), "size": len(data),
        "inputs": {"modalities": ["ct", "t1", "t2"]}, "timings": {"cpu_s": 1.0, "gpu_s": None}}]}))
    return index


def test_cli_download_truncated_then_resumed(server, tmp_path):
    url, handler = server
    index = _publish(tmp_path, url, handler)
    env = {"BRAINBARRIERS_CACHE": str(tmp_path / "cache"), "BRAINBARRIERS_MODELS_INDEX": str(index)}
    handler.truncate["tiny-net.zip"] = 1000
    assert_one_line_error(run_cli("models", "download", "tiny-net", env=env), "truncated")
    proc = run_cli("models", "download", "tiny-net", env=env)
    assert proc.returncode == 0, proc.stderr
    assert handler.log[-1]["range"] == "bytes=1000-"
    folder = tmp_path / "cache" / "models" / "tiny-net-0.0.1"
    assert load_bundle(folder).id == "tiny-net"
    assert not list((tmp_path / "cache" / "downloads").glob("*"))
    proc = run_cli("models", "list", env=env)
    assert "tiny-net@0.0.1" in proc.stdout and str(folder) in proc.stdout


def test_cli_download_wrong_hash(server, tmp_path):
    url, handler = server
    index = _publish(tmp_path, url, handler, sha_override="ab" * 32)
    env = {"BRAINBARRIERS_CACHE": str(tmp_path / "cache"), "BRAINBARRIERS_MODELS_INDEX": str(index)}
    assert_one_line_error(run_cli("models", "download", "tiny-net", env=env), "SHA-256")
    assert not (tmp_path / "cache" / "models" / "tiny-net-0.0.1").exists()
