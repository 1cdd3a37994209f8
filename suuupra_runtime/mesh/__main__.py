"""Mesh command line.

python -m suuupra_runtime.mesh certs --dir DIR [--rotate WORKLOAD]   dev CA + SPIFFE certs
python -m suuupra_runtime.mesh render [--out mesh/envoy] [--check]    dev Envoy configs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from suuupra_runtime.mesh.certs import describe, ensure_dev_certificates, rotate
from suuupra_runtime.mesh.envoy import DEV_CERT_DIR, DevAddressing, render_all
from suuupra_runtime.mesh.topology import DEFAULT_TOPOLOGY_PATH, ROOT, load_topology

DEFAULT_OUT = ROOT / "mesh" / "envoy"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m suuupra_runtime.mesh")
    parser.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY_PATH)
    commands = parser.add_subparsers(dest="command", required=True)
    certs = commands.add_parser("certs", help="create/renew the dev CA and workload certificates")
    certs.add_argument("--dir", type=Path, required=True)
    certs.add_argument("--rotate", metavar="WORKLOAD", help="issue a new key+cert for WORKLOAD")
    render = commands.add_parser("render", help="render the dev Envoy configs")
    render.add_argument("--out", type=Path, default=DEFAULT_OUT)
    render.add_argument("--cert-dir", default=DEV_CERT_DIR)
    render.add_argument("--check", action="store_true", help="fail if files differ (no writes)")
    args = parser.parse_args(argv)

    topology = load_topology(args.topology)
    if args.command == "certs":
        if args.rotate:
            cert = rotate(args.dir, args.rotate)
            print(f"rotated {args.rotate}: serial={cert.serial_number:x}")
        else:
            ensure_dev_certificates(topology, args.dir)
        print("\n".join(describe(args.dir)))
        return 0

    files = render_all(topology, DevAddressing(), args.cert_dir)
    stale = [n for n, text in files.items() if _read(args.out / n) != text]
    extra = sorted(p.name for p in args.out.glob("*.yaml") if p.name not in files)
    if args.check:
        for name in [*stale, *extra]:
            print(f"{args.out / name}: out of date (run `python -m suuupra_runtime.mesh render`)")
        return 1 if stale or extra else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (args.out / name).write_text(files[name])
    for name in extra:
        (args.out / name).unlink()
    print(f"{len(files)} configs in {args.out} ({len(stale)} updated, {len(extra)} removed)")
    return 0


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


if __name__ == "__main__":
    sys.exit(main())
