"""The ACM aggregate of the SQLite store (on or off per app, ACME's record, the
certificate issued and the challenges in flight per custom domain), kept beside
``sqlite.py`` so that module stays one screen per aggregate."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from dynod.model.acm import AcmChallenge, AcmDomain, AcmStatus


class SqliteAcmTx:
    """:class:`~dynod.store.protocol.AcmTx` for :class:`SqliteTx`."""

    db: sqlite3.Connection

    def acm(self, app: str) -> bool | None:
        row = self.db.execute("SELECT acm FROM apps WHERE name = ?", (app,)).fetchone()
        return None if row is None else bool(row[0])

    def set_acm(self, app: str, on: bool) -> None:
        self.db.execute("UPDATE apps SET acm = ? WHERE name = ?", (int(on), app))

    _ACM = ("SELECT c.hostname, a.name, c.status, c.updated_at, c.reason, c.not_before,"
            " c.not_after, c.failures, c.next_attempt FROM acm_domains c"
            " JOIN domains d ON d.hostname = c.hostname JOIN apps a ON a.id = d.app_id")

    @staticmethod
    def _acm_domain(r: sqlite3.Row | tuple[object, ...]) -> AcmDomain:
        def opt(v: object) -> datetime | None:
            return None if v is None else datetime.fromisoformat(str(v))

        return AcmDomain(str(r[0]), str(r[1]), AcmStatus(str(r[2])),
                         datetime.fromisoformat(str(r[3])), str(r[4]), opt(r[5]), opt(r[6]),
                         int(str(r[7])), opt(r[8]))

    def acm_domain(self, hostname: str) -> AcmDomain | None:
        row = self.db.execute(self._ACM + " WHERE c.hostname = ?", (hostname,)).fetchone()
        return None if row is None else self._acm_domain(row)

    def acm_domains(self, app: str | None) -> list[AcmDomain]:
        if app is None:
            rows = self.db.execute(self._ACM + " ORDER BY c.hostname")
        else:
            rows = self.db.execute(self._ACM + " WHERE a.name = ? ORDER BY c.hostname", (app,))
        return [self._acm_domain(r) for r in rows]

    def put_acm_domain(self, domain: AcmDomain) -> None:
        def opt(v: datetime | None) -> str | None:
            return None if v is None else v.isoformat()

        # Only for a domain that still exists (a removal may have raced the order).
        self.db.execute(
            "INSERT OR REPLACE INTO acm_domains (hostname, status, reason, updated_at,"
            " not_before, not_after, failures, next_attempt)"
            " SELECT hostname, ?, ?, ?, ?, ?, ?, ? FROM domains WHERE hostname = ?",
            (str(domain.status), domain.reason, domain.updated_at.isoformat(),
             opt(domain.not_before), opt(domain.not_after), domain.failures,
             opt(domain.next_attempt), domain.hostname))

    def remove_acm_domains(self, app: str) -> None:
        self.db.execute("DELETE FROM acm_domains WHERE hostname IN (SELECT hostname FROM"
                        " domains WHERE app_id = (SELECT id FROM apps WHERE name = ?))", (app,))

    def acm_certs(self) -> dict[str, str]:
        rows = self.db.execute("SELECT hostname, bundle FROM acm_certs ORDER BY hostname")
        return {str(r[0]): str(r[1]) for r in rows}

    def put_acm_cert(self, hostname: str, bundle: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO acm_certs (hostname, bundle)"
                        " SELECT hostname, ? FROM domains WHERE hostname = ?",
                        (bundle, hostname))

    def remove_acm_cert(self, hostname: str) -> None:
        self.db.execute("DELETE FROM acm_certs WHERE hostname = ?", (hostname,))

    def acm_challenges(self) -> list[AcmChallenge]:
        rows = self.db.execute("SELECT hostname, token, key_authorization FROM"
                               " acm_challenges ORDER BY hostname, token")
        return [AcmChallenge(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    def put_acm_challenge(self, challenge: AcmChallenge) -> None:
        self.db.execute("INSERT OR REPLACE INTO acm_challenges (hostname, token,"
                        " key_authorization) SELECT hostname, ?, ? FROM domains"
                        " WHERE hostname = ?", (challenge.token, challenge.key_authorization,
                                                challenge.hostname))

    def remove_acm_challenge(self, hostname: str, token: str) -> None:
        self.db.execute("DELETE FROM acm_challenges WHERE hostname = ? AND token = ?",
                        (hostname, token))
