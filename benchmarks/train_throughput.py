"""Train-step throughput of the ESMM, search and retrain steps on the default model.

Command:
  python benchmarks/train_throughput.py [--batch-size 2048] [--json out.json]

A shortcut for `python benchmarks/suite.py --only train --batches B` (see suite.py): examples/s
of each jitted update with the batch on the device and fed by the real input pipeline, compile
time, peak RSS and the roofline of each step.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    suite = Path(__file__).with_name("suite.py")
    cmd = [sys.executable, str(suite), "--only", "train", "--batches", str(args.batch_size)]
    raise SystemExit(subprocess.call(cmd + (["--json", args.json] if args.json else [])))


if __name__ == "__main__":
    main()
