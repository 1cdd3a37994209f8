"""Contracts toolchain: build a descriptor image, generate `gen/`, and run buf checks.

Third-party protos are never copied into the repository. They are resolved at build time from
installed packages: `google/rpc` and `google/api` from googleapis-common-protos, the well-known
types from grpcio-tools, and `buf/validate/validate.proto` from the descriptor embedded in the
protovalidate wheel (which ships no `.proto` source).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from pathlib import Path

from google.protobuf import descriptor_pb2, duration_pb2, field_mask_pb2, timestamp_pb2

from tools import permissions

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
GEN_DIR = ROOT / "gen"
BUILD_DIR = ROOT / "build"
BUF_CONFIG = ROOT / "buf.yaml"
IMAGE_PATH = BUILD_DIR / "image.binpb"
OUR_ROOT = "suuupra"
VALIDATE_PROTO = "buf/validate/validate.proto"


def _site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def _well_known_include() -> Path:
    import grpc_tools

    return Path(grpc_tools.__file__).parent / "_proto"


def _write_validate_descriptor_set(path: Path) -> None:
    """Write buf/validate/validate.proto (and the WKTs it imports) as a FileDescriptorSet."""
    from protovalidate._gen.buf.validate import validate_pb

    fds = descriptor_pb2.FileDescriptorSet()
    for module in (descriptor_pb2, duration_pb2, field_mask_pb2, timestamp_pb2):
        file_proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(file_proto)
        fds.file.append(file_proto)
    fds.file.append(
        descriptor_pb2.FileDescriptorProto.FromString(validate_pb._DESC.proto.to_binary())
    )
    path.write_bytes(fds.SerializeToString())


def proto_files(proto_dir: Path = PROTO_DIR) -> list[str]:
    return sorted(str(p.relative_to(proto_dir)) for p in proto_dir.rglob("*.proto"))


def _protoc(args: Sequence[str], proto_dir: Path, work: Path) -> None:
    validate_set = work / "validate.binpb"
    _write_validate_descriptor_set(validate_set)
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--descriptor_set_in={validate_set}",
        f"-I{proto_dir}",
        f"-I{_site_packages()}",
        f"-I{_well_known_include()}",
        *args,
    ]
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        raise SystemExit(f"protoc failed:\n{result.stderr}")


def generate(out_dir: Path, proto_dir: Path = PROTO_DIR) -> None:
    """Generate messages, gRPC stubs and .pyi stubs for every proto into `out_dir`."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    files = proto_files(proto_dir)
    with tempfile.TemporaryDirectory() as tmp:
        _protoc(
            [
                f"--python_out={out_dir}",
                f"--grpc_python_out={out_dir}",
                f"--mypy_out={out_dir}",
                f"--mypy_grpc_out={out_dir}",
                *files,
            ],
            proto_dir,
            Path(tmp),
        )
        # Our generated code imports buf.validate.validate_pb2; the protovalidate wheel only has a
        # protobuf-py flavour of it, so generate the google.protobuf flavour from its descriptor.
        _protoc(
            [f"--python_out={out_dir}", f"--mypy_out={out_dir}", VALIDATE_PROTO],
            proto_dir,
            Path(tmp),
        )
    for directory in (p for p in out_dir.rglob("*") if p.is_dir()):
        (directory / "__init__.py").touch()


def build_image(out: Path, proto_dir: Path = PROTO_DIR) -> Path:
    """A FileDescriptorSet of our protos with imports and source info, for buf lint/breaking."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        _protoc(
            [
                "--include_imports",
                "--include_source_info",
                f"--descriptor_set_out={out}",
                *proto_files(proto_dir),
            ],
            proto_dir,
            Path(tmp),
        )
    return out


def _buf(*args: str) -> subprocess.CompletedProcess[str]:
    buf = shutil.which("buf", path=str(Path(sys.executable).parent)) or "buf"
    return subprocess.run([buf, *args], capture_output=True, text=True, cwd=ROOT, check=False)


def _trees_differ(a: Path, b: Path) -> list[str]:
    differences: list[str] = []
    comparison = filecmp.dircmp(a, b, ignore=["__pycache__"])

    def walk(cmp: filecmp.dircmp[str], prefix: str) -> None:
        differences.extend(f"only in gen/: {prefix}{n}" for n in cmp.left_only)
        differences.extend(f"missing from gen/: {prefix}{n}" for n in cmp.right_only)
        for name in cmp.common_files:
            if (Path(cmp.left) / name).read_bytes() != (Path(cmp.right) / name).read_bytes():
                differences.append(f"differs: {prefix}{name}")
        for name, sub in cmp.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(comparison, "")
    return differences


def check_drift() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "gen"
        generate(fresh)
        return _trees_differ(GEN_DIR, fresh)


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def lint(
    proto_dir: Path = PROTO_DIR, image_path: Path = IMAGE_PATH
) -> subprocess.CompletedProcess[str]:
    image = build_image(image_path, proto_dir)
    return _buf("lint", str(image), "--config", str(BUF_CONFIG), "--path", OUR_ROOT)


def format_check() -> subprocess.CompletedProcess[str]:
    return _buf("format", "-d", "--exit-code", str(PROTO_DIR.relative_to(ROOT)))


def _main_protos(ref: str, into: Path) -> Path | None:
    """Export proto/ as it is on `ref`; None when the ref or its protos do not exist yet."""
    listed = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", ref, "--", "proto"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if listed.returncode != 0 or not listed.stdout.strip():
        return None
    for name in listed.stdout.split():
        blob = subprocess.run(
            ["git", "show", f"{ref}:{name}"], capture_output=True, cwd=ROOT, check=True
        ).stdout
        target = into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob)
    return into / "proto"


def breaking(ref: str = "main") -> tuple[bool, str]:
    with tempfile.TemporaryDirectory() as tmp:
        old_dir = _main_protos(ref, Path(tmp))
        if old_dir is None:
            return True, f"no protos on {ref}: nothing to compare against"
        return breaking_between(old_dir, PROTO_DIR, Path(tmp))


def breaking_between(old_dir: Path, new_dir: Path, work: Path) -> tuple[bool, str]:
    """buf breaking of the protos in `new_dir` against those in `old_dir`."""
    old = build_image(work / "against.binpb", old_dir)
    new = build_image(work / "new.binpb", new_dir)
    result = _buf(
        "breaking", str(new), "--against", str(old), "--config", str(BUF_CONFIG), "--path", OUR_ROOT
    )
    return result.returncode == 0, result.stdout + result.stderr


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("generate", help="regenerate gen/ from proto/")
    sub.add_parser("check", help="drift, buf lint, buf format, buf breaking")
    parsed = parser.parse_args(argv)
    if parsed.command == "generate":
        generate(GEN_DIR)
        rows, missing = permissions.collect(permissions.load_image(build_image(IMAGE_PATH)))
        permissions.MATRIX_PATH.write_text(permissions.render(rows))
        print(f"generated {len(proto_files())} protos into {GEN_DIR.relative_to(ROOT)}/")
        if missing:
            print("methods without an access option:\n  " + "\n  ".join(missing))
            return 1
        return 0
    failures = 0
    rows, missing = permissions.collect(permissions.load_image(build_image(IMAGE_PATH)))
    if missing:
        failures += 1
        print("methods without a (suuupra.options.v1.access) option:\n  " + "\n  ".join(missing))
    if permissions.render(rows) != _read(permissions.MATRIX_PATH):
        failures += 1
        print("docs/permissions.md is stale; run ./dev protos generate")
    drift = check_drift()
    if drift:
        failures += 1
        print("gen/ is stale; run ./dev protos generate:\n  " + "\n  ".join(drift))
    for name, result in (("buf lint", lint()), ("buf format", format_check())):
        if result.returncode != 0:
            failures += 1
            print(f"{name} failed:\n{result.stdout}{result.stderr}")
    ok, report = breaking(os.environ.get("SUUUPRA_BREAKING_AGAINST", "main"))
    if not ok:
        failures += 1
        print(f"buf breaking failed:\n{report}")
    print("contracts: " + ("FAILED" if failures else "ok"))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
