"""`./dev` subcommands. The two a new user needs: `./dev up` and `./dev test`."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_ENVS = ("lint", "types", "proto", "unit", "integration", "mesh", "e2e")


def _run(command: Sequence[str]) -> int:
    return subprocess.run(list(command), cwd=ROOT, check=False).returncode


def cmd_test(args: argparse.Namespace) -> int:
    envs = args.env or list(TEST_ENVS)
    extra = ["--", *args.pytest_args] if args.pytest_args else []
    return _run([sys.executable, "-m", "tox", "run", "-e", ",".join(envs), *extra])


def cmd_up(args: argparse.Namespace) -> int:
    from tools import platform_runner

    return platform_runner.main(args.rest)


def cmd_protos(args: argparse.Namespace) -> int:
    from tools import protos

    return protos.main(args.rest)


def cmd_lock(_: argparse.Namespace) -> int:
    """Reinstall pyproject's pins and rewrite requirements.lock from the resulting environment."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    if _run([sys.executable, "-m", "pip", "install", "--quiet", *pins]) != 0:
        return 1
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    ).stdout
    header = (
        "# Transitive closure of pyproject.toml's pinned dependencies (pip freeze). "
        "Regenerate with ./dev lock.\n"
    )
    (ROOT / "requirements.lock").write_text(header + frozen)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] in (["up"], ["protos"]):
        # Everything after these goes to their own parsers, options first included
        # (`./dev up --port-offset 1000`), which argparse's REMAINDER does not allow.
        os.chdir(ROOT)
        rest = args_list[1:]
        rest = rest[1:] if rest[:1] == ["--"] else rest
        return (
            cmd_up(argparse.Namespace(rest=rest))
            if args_list[0] == "up"
            else cmd_protos(argparse.Namespace(rest=rest))
        )
    parser = argparse.ArgumentParser(prog="./dev", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the whole platform (embedded PostgreSQL, NATS, Envoy)")
    up.add_argument("rest", nargs=argparse.REMAINDER)
    up.set_defaults(func=cmd_up)
    test = sub.add_parser("test", help="run the full test suite (every tox environment)")
    test.add_argument("-e", "--env", action="append", choices=TEST_ENVS)
    test.add_argument("pytest_args", nargs=argparse.REMAINDER)
    test.set_defaults(func=cmd_test)
    protos = sub.add_parser("protos", help="generate gen/ or check contracts")
    protos.add_argument("rest", nargs=argparse.REMAINDER)
    protos.set_defaults(func=cmd_protos)
    lock = sub.add_parser("lock", help="rewrite requirements.lock from pyproject.toml")
    lock.set_defaults(func=cmd_lock)
    args = parser.parse_args(args_list)
    os.chdir(ROOT)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
