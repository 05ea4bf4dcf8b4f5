"""Shared pytest set-up: headless Qt, the module's Lib package on sys.path, modest threading."""

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO / "SlicerBrainBarriers"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))
