"""An ACME account and one certificate order (RFC 8555, http-01), with certbot's ``acme``
library: the protocol (JWS, nonces, polling, the CA's errors) is its, not ours.

The account key is made once and kept in ``<state>/acme/account.key`` (0600); the
account's URL per directory in ``account.json``, so a restart never registers again (Let's
Encrypt limits new accounts). Each certificate gets a new P-256 key.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

import requests
from acme import challenges, client, crypto_util, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.jwk import JWKRSA

log = logging.getLogger(__name__)


def write_private(path: Path, bundle: str) -> None:
    """Atomically replace ``path`` with ``bundle`` (0600: it holds a private key)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(bundle)
        Path(tmp).replace(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).unlink()

USER_AGENT = "dynod (Automated Certificate Management)"
# An order's validation and issuance, at most (Let's Encrypt: seconds, usually).
ORDER_TIMEOUT = timedelta(seconds=90)

# (host, token, key authorization) -> answered until the block ends
Challenge = Callable[[str, str, str], contextlib.AbstractContextManager[None]]


class AcmeFailure(Exception):
    """An order failed; ``reason`` is what the CA said (shown by ``certs:auto``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Issued:
    bundle: str  # the chain (leaf first), then the key, PEM: what HAProxy loads
    not_before: datetime
    not_after: datetime


def validity(pem: str) -> tuple[datetime, datetime]:
    """(notBefore, notAfter) of the first certificate of a PEM chain."""
    cert = x509.load_pem_x509_certificate(pem.encode())
    return cert.not_valid_before_utc, cert.not_valid_after_utc


def reason_of(exc: BaseException, directory: str) -> str:
    """What a failed order says to a user: the CA's own error when there is one."""
    if isinstance(exc, errors.ValidationError):
        details = [str(c.error.detail or c.error.description or c.error.typ)
                   for a in exc.failed_authzrs for c in a.body.challenges
                   if c.error is not None]
        return "; ".join(details) or "the CA rejected the validation"
    if isinstance(exc, messages.Error):
        return str(exc.detail or exc.description or exc.typ)
    if isinstance(exc, errors.IssuanceError):
        return reason_of(exc.error, directory)
    if isinstance(exc, errors.TimeoutError):
        return (f"the CA did not validate and issue within {ORDER_TIMEOUT.seconds} s; "
                "it is tried again")
    if isinstance(exc, requests.RequestException):
        return f"cannot reach the ACME directory {directory}: {exc}"
    return f"{type(exc).__name__}: {exc}"


class AcmeIssuer:
    """Orders certificates from one ACME directory. Thread-safe (one order at a time)."""

    def __init__(self, directory: str, ca_file: Path | None, state_dir: Path) -> None:
        self.directory = directory
        # The CA certificates the directory's HTTPS must verify against (a private CA's,
        # a test server's); None: Python's default store.
        self.verify: str | bool = str(ca_file) if ca_file is not None else True
        self.dir = state_dir / "acme"
        self._lock = threading.Lock()
        self._client: client.ClientV2 | None = None

    # -- the account

    def _account_key(self) -> JWKRSA:
        path = self.dir / "account.key"
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            write_private(path, key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()).decode())
        if not isinstance(key, rsa.RSAPrivateKey):
            raise AcmeFailure(f"{path} is not an RSA key; move it away and dynod makes a "
                              "new account")
        return JWKRSA(key=key)

    def _accounts(self) -> dict[str, str]:
        try:
            data = json.loads((self.dir / "account.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _connect(self) -> client.ClientV2:
        if self._client is not None:
            return self._client
        # verify_ssl goes to requests' verify=, which also takes a CA file (the type
        # says bool).
        net = client.ClientNetwork(self._account_key(), user_agent=USER_AGENT,
                                   verify_ssl=cast(bool, self.verify))
        acme = client.ClientV2(client.ClientV2.get_directory(self.directory, net), net)
        accounts = self._accounts()
        known = accounts.get(self.directory)
        if known:
            net.account = messages.RegistrationResource.json_loads(known)
        else:
            try:
                regr = acme.new_account(
                    messages.NewRegistration.from_data(terms_of_service_agreed=True))
            except errors.ConflictError as exc:  # the key has an account there already
                regr = messages.RegistrationResource(uri=exc.location,
                                                     body=messages.Registration())
                net.account = regr
            accounts[self.directory] = regr.json_dumps()
            write_private(self.dir / "account.json", json.dumps(accounts, indent=1) + "\n")
            log.info("acme: account %s at %s", regr.uri, self.directory)
        self._client = acme
        return acme

    # -- one order

    def issue(self, hostname: str, answer: Challenge) -> Issued:
        """A certificate for ``hostname``, validated by http-01 through ``answer``.
        Raises AcmeFailure with the CA's reason."""
        with self._lock:
            try:
                return self._issue(hostname, answer)
            except AcmeFailure:
                raise
            except Exception as exc:
                # A stale account or nonce heals on a fresh connection next time.
                self._client = None
                raise AcmeFailure(reason_of(exc, self.directory)) from exc

    def _issue(self, hostname: str, answer: Challenge) -> Issued:
        acme = self._connect()
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        order = acme.new_order(crypto_util.make_csr(key_pem, [hostname]))
        with contextlib.ExitStack() as answers:
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue  # the CA reused an earlier validation
                challb = next((c for c in authz.body.challenges
                               if isinstance(c.chall, challenges.HTTP01)), None)
                if challb is None:
                    raise AcmeFailure(f"the CA offers no http-01 challenge for {hostname}")
                response, validation = challb.response_and_validation(acme.net.key)
                answers.enter_context(answer(hostname, challb.chall.encode("token"),
                                             validation))
                acme.answer_challenge(challb, response)
            # poll_and_finalize compares with a naive local datetime.now().
            deadline = datetime.now() + ORDER_TIMEOUT
            order = acme.poll_and_finalize(order, deadline)
        chain = str(order.fullchain_pem)
        not_before, not_after = validity(chain)
        return Issued(chain.rstrip("\n") + "\n" + key_pem.decode(), not_before, not_after)
