"""Throughput of SRNet training steps and inference on this machine.

Run as a script (it is not collected by pytest)::

    python benchmarks/bench_srnet.py                       # patches 256 128 64 32, batch 4 and 16
    python benchmarks/bench_srnet.py --patches 64 --batch-sizes 4 --threads 2 --channels 3

A training step is forward + cross-entropy + backward + Adamax update in fp32 with the model in
training mode, exactly as :func:`pipeline.srnet.train.train_crop_model` runs it; inference is a
forward pass in eval mode under ``torch.inference_mode``.  Each figure is the median over
``--repeats`` timed steps after ``--warmup`` untimed ones, reported as images per second.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pipeline.srnet.model import SRNet


def _time_steps(step, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def measure(patch: int, batch_size: int, channels: int, device: str, repeats: int, warmup: int) -> dict:
    """Median seconds per training step and per inference batch, and the images/s they imply."""
    torch.manual_seed(0)
    model = SRNet(in_channels=channels, n_classes=2).to(device)
    optimizer = torch.optim.Adamax(model.parameter_groups(2e-4), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    inputs = torch.rand(batch_size, channels, patch, patch, device=device)
    labels = torch.arange(batch_size, device=device) % 2

    def train_step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs), labels)
        loss.backward()
        optimizer.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def infer_step() -> None:
        model.eval()
        with torch.inference_mode():
            model(inputs)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    train_s = _time_steps(train_step, repeats, warmup)
    infer_s = _time_steps(infer_step, repeats, warmup)
    return {
        "patch": patch,
        "batch": batch_size,
        "channels": channels,
        "train_step_s": train_s,
        "train_img_per_s": batch_size / train_s,
        "infer_img_per_s": batch_size / infer_s,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patches", type=int, nargs="+", default=[256, 128, 64, 32])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--channels", type=int, default=1, choices=(1, 3))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}")
    print(f"{'patch':>5} {'batch':>5} {'ch':>2} {'step s':>8} {'train img/s':>11} {'infer img/s':>11}")
    for patch in args.patches:
        for batch_size in args.batch_sizes:
            row = measure(patch, batch_size, args.channels, args.device, args.repeats, args.warmup)
            print(
                f"{row['patch']:>5} {row['batch']:>5} {row['channels']:>2} {row['train_step_s']:>8.3f} "
                f"{row['train_img_per_s']:>11.1f} {row['infer_img_per_s']:>11.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
