"""Files settings from the environment (`SUUUPRA_FILES_*`)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.files.domain import GiB


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None


@dataclass(frozen=True)
class FilesConfig:
    # Where staged (partial) uploads live, and the local-disk objects when that backend is used.
    data_dir: Path
    # HMAC key of download links; replicas must share it or links break between them.
    link_key: bytes
    s3: S3Settings | None = None  # None: the local-disk backend
    default_quota_bytes: int = 10 * GiB
    retention_seconds: float = 7 * 24 * 3600.0
    purge_interval_seconds: float = 300.0
    # In-progress uploads untouched this long are discarded with their partial bytes.
    upload_expiry_seconds: float = 7 * 24 * 3600.0
    download_chunk_bytes: int = 1024 * 1024
    link_ttl_seconds: int = 300
    # Durably record the committed offset after this many new bytes (and at every interruption).
    checkpoint_bytes: int = 8 * 1024 * 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FilesConfig:
        env = os.environ if env is None else env
        data_dir = Path(
            env.get("SUUUPRA_FILES_DATA_DIR")
            or env.get("SUUUPRA_DATA_DIR")
            or Path.cwd() / ".suuupra" / "data" / "services" / "files"
        )
        raw_key = env.get("SUUUPRA_FILES_LINK_KEY", "")
        # Without a configured key links still work, but only on this process until it restarts.
        link_key = raw_key.encode() if raw_key else secrets.token_bytes(32)
        s3 = None
        if env.get("SUUUPRA_FILES_BACKEND", "local") == "s3":
            s3 = S3Settings(
                bucket=env.get("SUUUPRA_FILES_S3_BUCKET", "suuupra-files"),
                endpoint_url=env.get("SUUUPRA_FILES_S3_ENDPOINT") or None,
                region=env.get("SUUUPRA_FILES_S3_REGION", "us-east-1"),
                access_key_id=env.get("SUUUPRA_FILES_S3_ACCESS_KEY_ID") or None,
                secret_access_key=env.get("SUUUPRA_FILES_S3_SECRET_ACCESS_KEY") or None,
            )
        return cls(
            data_dir=data_dir,
            link_key=link_key,
            s3=s3,
            default_quota_bytes=int(env.get("SUUUPRA_FILES_DEFAULT_QUOTA_BYTES", str(10 * GiB))),
            retention_seconds=float(env.get("SUUUPRA_FILES_RETENTION_SECONDS", str(7 * 24 * 3600))),
        )
