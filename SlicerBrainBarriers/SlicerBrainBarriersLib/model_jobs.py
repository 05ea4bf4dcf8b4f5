"""Model download for the panel, run in a child process with JSON progress lines.

``python -m SlicerBrainBarriersLib.model_jobs download ID[@VERSION]`` prints
``{"stage": "download", "fraction": ..., "message": ...}`` while bytes arrive and
``{"stage": "done", "outputs": {"folder": ...}}`` once the bundle is verified and installed, or
``{"stage": "error", "message": ...}`` and exit code 2. Cancelling ends the process: the core
downloads into a partial file and only renames a verified bundle into the cache.
"""

from __future__ import annotations

import json
import sys
import time


def _emit(stage: str, fraction: float | None = None, message: str = "", **outputs) -> None:
    line = {"stage": stage, "message": message}
    if fraction is not None:
        line["fraction"] = fraction
    if outputs:
        line["outputs"] = outputs
    print(json.dumps(line), flush=True)


def download(name: str) -> int:
    from brainbarriers.bundles import download_bundle, find_entry, find_installed, load_bundle

    entry = find_entry(name)
    installed = find_installed(entry["id"], entry["version"])
    if installed is not None:
        load_bundle(installed)  # checks every file's SHA-256
        _emit("done", 1.0, "already installed", folder=str(installed))
        return 0
    last = [0.0]

    def report(got: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] < 0.1 and (total is None or got < total):
            return
        last[0] = now
        fraction = got / total if total else None
        _emit("download", fraction, f"{got / 2**20:.1f} of {total / 2**20:.1f} MB" if total else f"{got / 2**20:.1f} MB")

    folder = download_bundle(entry, report)
    _emit("done", 1.0, f"installed {entry['id']}@{entry['version']} (verified)", folder=str(folder))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "download":
        _emit("error", message="usage: python -m SlicerBrainBarriersLib.model_jobs download ID[@VERSION]")
        return 2
    try:
        return download(argv[1])
    except Exception as exc:  # one line for the panel; the user sees it under the progress bar
        _emit("error", message=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return 2


if __name__ == "__main__":
    sys.exit(main())
