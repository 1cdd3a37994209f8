"""The contracts toolchain catches what it exists to catch: drift, lint, breaking changes,
and RPCs that declare no access rule."""

from __future__ import annotations

import shutil
from pathlib import Path

from tools import permissions, protos

ECHO = Path("suuupra/testing/v1/echo_service.proto")


def _copy_protos(tmp_path: Path) -> Path:
    target = tmp_path / "proto"
    shutil.copytree(protos.PROTO_DIR, target)
    return target


def test_committed_gen_matches_the_protos() -> None:
    assert protos.check_drift() == []


def test_drift_is_detected_when_a_proto_changes(tmp_path: Path) -> None:
    proto_dir = _copy_protos(tmp_path)
    source = proto_dir / ECHO
    source.write_text(
        source.read_text().replace("int32 slept_milliseconds = 1;", "int64 slept_milliseconds = 1;")
    )
    fresh = tmp_path / "gen"
    protos.generate(fresh, proto_dir)
    differences = protos._trees_differ(protos.GEN_DIR, fresh)
    assert "differs: suuupra/testing/v1/echo_service_pb2.py" in differences


def test_lint_reports_style_violations(tmp_path: Path) -> None:
    proto_dir = _copy_protos(tmp_path)
    source = proto_dir / ECHO
    source.write_text(source.read_text() + "\nenum bad_enum {\n  X = 0;\n}\n")
    result = protos.lint(proto_dir, tmp_path / "image.binpb")
    assert result.returncode != 0
    assert "should be PascalCase" in result.stdout


def test_the_committed_protos_lint_clean(tmp_path: Path) -> None:
    result = protos.lint(protos.PROTO_DIR, tmp_path / "image.binpb")
    assert result.returncode == 0, result.stdout + result.stderr


def test_breaking_change_is_reported(tmp_path: Path) -> None:
    new_dir = _copy_protos(tmp_path)
    source = new_dir / ECHO
    source.write_text(source.read_text().replace("  string request_id = 2;\n", ""))
    ok, report = protos.breaking_between(protos.PROTO_DIR, new_dir, tmp_path)
    assert not ok
    assert "request_id" in report
    unchanged_ok, _ = protos.breaking_between(protos.PROTO_DIR, protos.PROTO_DIR, tmp_path)
    assert unchanged_ok


def test_method_without_access_option_is_flagged(tmp_path: Path) -> None:
    proto_dir = _copy_protos(tmp_path)
    source = proto_dir / ECHO
    text = source.read_text().replace(
        "  rpc Sleep(SleepRequest) returns (SleepResponse) {\n"
        "    option (suuupra.options.v1.access) = {public: true};\n  }",
        "  rpc Sleep(SleepRequest) returns (SleepResponse);",
    )
    assert text != source.read_text()
    source.write_text(text)
    image = protos.build_image(tmp_path / "image.binpb", proto_dir)
    rows, missing = permissions.collect(permissions.load_image(image))
    assert missing == ["/suuupra.testing.v1.EchoService/Sleep"]
    assert ("suuupra.testing.v1.EchoService", "ProtectedEcho", "`testing.echo.call`") in {
        (r.service, r.method, r.rule) for r in rows
    }
