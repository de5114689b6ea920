"""Wall time and bytes written by SRNet training at the cpu preset, by checkpoint interval.

Run as a script (it is not collected by pytest)::

    python benchmarks/bench_srnet_checkpoints.py 0     # a checkpoint after every epoch
    python benchmarks/bench_srnet_checkpoints.py 60    # the default: at most once a minute

Trains the five crop networks of SIM-alpha01's first split of the synthetic default through
:func:`pipeline.analysis.experiment.run_experiment` (as ``ml_age --methods srnet --runs 1``
would) in a fresh folder under ``agetrace-out/``, and prints the wall time and the bytes this
process wrote (``write_bytes`` of ``/proc/self/io``, Linux only).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from pipeline.analysis.config import ExperimentConfig
from pipeline.analysis.experiment import run_experiment
from bench_srnet_paper import one_device_manifest  # a sibling script: benchmarks/ is on sys.path
from pipeline.data.manifest import load_manifest


def _written_bytes() -> int:
    with open("/proc/self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("write_bytes"))


def main(argv: list[str]) -> int:
    every_s = float(argv[0]) if argv else 60.0
    Path("agetrace-out").mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="bench_ckpt_", dir="agetrace-out"))
    manifest = one_device_manifest("SIM-alpha01", folder / "manifest.csv")
    cfg = ExperimentConfig(methods=("srnet",), runs=1, workers=1, progress=False,
                           srnet_overrides={"checkpoint_every_s": every_s})
    before, started = _written_bytes(), time.perf_counter()
    run_experiment(load_manifest(manifest), folder / "run", cfg)
    print(f"checkpoint_every_s={every_s:g}: {time.perf_counter() - started:.1f} s, "
          f"{(_written_bytes() - before) / 1e6:.0f} MB written ({folder})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
