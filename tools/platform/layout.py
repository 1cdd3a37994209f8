"""Where the runner keeps its state: one directory (default `.suuupra/`, gitignored).

<state>/data/postgres/       embedded PostgreSQL cluster (log: data/postgres.log)
<state>/data/nats/           JetStream store (log: data/nats.log)
<state>/mail/                every mail sent on the platform (SMTP sink), a Maildir: mail/new/
<state>/data/services/<name>/  a service's own files (SUUUPRA_DATA_DIR), e.g. files' objects
<state>/certs/               dev CA, SPIFFE workload certificates, SDS files
<state>/envoy/<name>.yaml    rendered Envoy bootstraps (sidecars and edge)
<state>/logs/<name>.log      one log per service, sidecar and the edge
<state>/demo-credentials.json  the platform admin's generated password (mode 0600)
<state>/secrets.json         identity's sealing keys, random per state dir (mode 0600)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StateLayout:
    root: Path

    @property
    def postgres_data(self) -> Path:
        return self.root / "data" / "postgres"

    @property
    def nats_store(self) -> Path:
        return self.root / "data" / "nats"

    @property
    def maildir(self) -> Path:
        return self.root / "mail"

    @property
    def certs(self) -> Path:
        return self.root / "certs"

    @property
    def envoy(self) -> Path:
        return self.root / "envoy"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets.json"

    @property
    def credentials(self) -> Path:
        return self.root / "demo-credentials.json"

    def service_data(self, name: str) -> Path:
        """A service's own data directory (created by the service when it needs it)."""
        return self.root / "data" / "services" / name

    def envoy_config(self, name: str) -> Path:
        return self.envoy / f"{name}.yaml"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def create(self) -> None:
        for directory in (self.root, self.root / "data", self.certs, self.envoy, self.logs):
            directory.mkdir(parents=True, exist_ok=True)
        # Keep the state out of git even when --state-dir points inside some other checkout.
        ignore = self.root / ".gitignore"
        if not ignore.exists():
            ignore.write_text("*\n")
