"""`make demo`: what the framework does end to end on the bundled data (grows with the project)."""

from __future__ import annotations

import sys

from detector.cli import main

if __name__ == "__main__":
    sys.exit(main(["info", "yolov9-t", "imgsz=640"]))
