"""Build and check image manifests.

    python -m pipeline.manifest build DIR [--out manifest.csv] [--device-from folder|serial | --device NAME]
                                          [--classes SPEC] [--verify-pixels]
    python -m pipeline.manifest check MANIFEST [--classes SPEC]
    python -m pipeline.manifest specs            # the shipped class specifications

Each subcommand also takes -q (warnings and errors only) and -v (debugging messages).

Exit status: 0 done; 1 ``check`` found problems (listed on stderr, each with its line); 2 error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.cli import EXIT_ERROR, add_subcommand, new_parser, run_command
from pipeline.data.classspec import load_class_spec, shipped_class_specs
from pipeline.data.errors import ManifestError
from pipeline.data.manifest import load_manifest, parse_capture_time
from pipeline.data.manifest_builder import DEVICE_SOURCES, build_manifest, write_manifest

#: exit status of ``check`` when the manifest has problems
EXIT_PROBLEMS = 1


def build_parser() -> argparse.ArgumentParser:
    p = new_parser("python -m pipeline.manifest", "Build and check image manifests.", __doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    b = add_subcommand(sub, "build", help="write a manifest for a folder tree from EXIF",
                       description="Write a manifest for a folder tree from EXIF.")
    b.add_argument("root", type=Path, help="folder holding the images (walked recursively)")
    b.add_argument("--out", type=Path, help="manifest to write (default: ROOT/manifest.csv)")
    group = b.add_mutually_exclusive_group()
    group.add_argument("--device", help="one device id for every image")
    group.add_argument("--device-from", choices=DEVICE_SOURCES[:2], help="device id from the parent folder "
                                                                         "(default) or the EXIF body serial")
    b.add_argument("--classes", help="class specification to label rows with (shipped name or TOML path)")
    b.add_argument("--verify-pixels", action="store_true", help="decode every image to catch corrupt pixel data")
    c = add_subcommand(sub, "check", help="validate a manifest and report every problem with its line",
                       description="Validate a manifest and report every problem with its line.")
    c.add_argument("manifest", type=Path, help="the manifest (CSV)")
    c.add_argument("--classes", help="class specification (shipped name or TOML path)")
    c.add_argument("--no-files", action="store_true", help="do not check that the image files exist")
    add_subcommand(sub, "specs", help="list the shipped class specifications",
                   description="List the shipped class specifications.")
    return p


def _label_rows(rows, spec_name):
    """Add a label column from a class specification; returns the rows outside every class."""
    spec = load_class_spec(spec_name)
    outside = []
    for row in rows:
        captured = parse_capture_time(row["captured_at"]) if row.get("captured_at") else None
        slot = int(row["timeslot"]) if row.get("timeslot") else None
        if row["device"] not in spec.devices:
            row["label"] = ""
            outside.append((row["path"], f"device {row['device']!r} is not in {spec.name!r}"))
            continue
        label, reason = spec.label_for(row["device"], timeslot=slot, captured_at=captured)
        row["label"] = "" if label is None else str(label)
        if label is None:
            outside.append((row["path"], reason))
    return outside


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the end of ``--help``)."""
    args = build_parser().parse_args(argv)
    if args.command == "check":  # the problems, as listed by the manifest reader, are the output
        return run_command(_check, args, (ManifestError, FileNotFoundError, ValueError), status=EXIT_PROBLEMS,
                           prefix="")
    work = _specs if args.command == "specs" else _build
    return run_command(work, args, (NotADirectoryError, ValueError), status=EXIT_ERROR)


def _specs(args: argparse.Namespace) -> int:
    for name in shipped_class_specs():
        spec = load_class_spec(name)
        print(f"{name}: {spec.name}, {len(spec.devices)} devices ({spec.time_axis}): "
              f"{', '.join(spec.devices)}")
    return 0


def _check(args: argparse.Namespace) -> int:
    manifest = load_manifest(args.manifest, class_spec=args.classes, check_files=not args.no_files)
    counts = {}
    for r in manifest.rows:
        counts.setdefault(r.device, {}).setdefault(r.label, 0)
        counts[r.device][r.label] += 1
    print(f"{manifest.source}: OK — {len(manifest.rows)} images, sha256 {manifest.sha256}")
    for device, per_class in counts.items():
        print(f"  {device}: " + ", ".join(f"class {k}: {v}" for k, v in sorted(per_class.items())))
    for e in manifest.excluded:
        print(f"  excluded line {e.line} ({e.path}): {e.reason}")
    return 0


def _build(args: argparse.Namespace) -> int:
    built = build_manifest(args.root, device=args.device, device_from=args.device_from,
                           relative_to=(args.out.parent if args.out else args.root),
                           verify_pixels=args.verify_pixels, progress=True)
    rows = built.rows
    outside = _label_rows(rows, args.classes) if args.classes else []
    out = args.out or (args.root / "manifest.csv")
    columns = ("path", "device", "captured_at", "label") if args.classes else ("path", "device", "captured_at")
    write_manifest(rows, out, columns=columns + tuple(c for c in ("make", "model", "exposure_s", "iso", "serial")))
    print(f"Wrote {out}: {len(rows)} images.")
    absolute = sum(Path(row["path"]).is_absolute() for row in rows)
    if absolute:
        print(f"  {absolute} path(s) written absolute: those images are not inside the manifest's folder "
              f"{out.parent.resolve()}, and relative paths must stay inside it.")
    for problem in built.problems:
        print(f"  {problem}")
    for path, reason in outside:
        print(f"  {path}: no class ({reason})")
    if built.problems:
        print(f"{len(built.problems)} problem(s) above; fix them, then run "
              f"`python -m pipeline.manifest check {out}`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
