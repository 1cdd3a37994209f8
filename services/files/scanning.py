"""The scan hook: runs on the complete, verified bytes before they become visible.

Plug in a real scanner (ClamAV's clamd, a cloud API) by implementing `Scanner`; the default lets
everything through. A rejection stores nothing and fails the upload with FAILED_PRECONDITION.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class ScanVerdict:
    clean: bool
    reason: str = ""


@dataclass(frozen=True)
class ScanSubject:
    tenant_id: str
    owner_id: str
    name: str
    content_type: str
    size_bytes: int
    sha256: str


class Scanner(Protocol):
    async def scan(self, path: Path, subject: ScanSubject) -> ScanVerdict: ...


class PassThroughScanner:
    async def scan(self, path: Path, subject: ScanSubject) -> ScanVerdict:
        return ScanVerdict(clean=True)
