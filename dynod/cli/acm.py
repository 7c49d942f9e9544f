"""dynoctl certs:auto, certs:auto:enable, certs:auto:refresh, certs:auto:disable: Heroku's
Automated Certificate Management, with its output (heroku/cli src/commands/certs/auto)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from dynod.cli import client, output
from dynod.cli.client import CliError, call
from dynod.cli.domains import stub
from dynod.v1 import domains_pb2

# Statuses still on their way to Cert issued or to a failure (certs:auto --wait).
UNSETTLED = ("", "pending")


def status_label(status: str) -> str:
    """Heroku's humanize() of an acm_status: ``cert issued`` -> ``Cert issued``,
    ``failing`` -> ``Failing``, none yet -> ``Waiting``."""
    if not status:
        return "Waiting"
    special = {"ok": "OK", "failed": "Failed", "verified": "In Progress",
               "dns-verified": "DNS Verified"}
    if status in special:
        return special[status]
    return " ".join(w[:1].upper() + w[1:] for w in status.split("-"))


def distance(seconds: float) -> str:
    """date-fns' formatDistanceToNow, which Heroku's Last Updated column shows."""
    minutes = round(seconds / 60)
    if seconds < 30:
        return "less than a minute"
    if minutes < 45:
        return "1 minute" if minutes <= 1 else f"{minutes} minutes"
    if minutes < 90:
        return "about 1 hour"
    if minutes < 1440:
        return f"about {round(minutes / 60)} hours"
    if minutes < 2520:
        return "1 day"
    if minutes < 43200:
        return f"{round(minutes / 1440)} days"
    if minutes < 86400:
        return "about 1 month" if minutes < 64800 else "about 2 months"
    if minutes < 525600:
        return f"{round(minutes / 43200)} months"
    years = minutes // 525600
    return f"about {years} year" + ("s" if years > 1 else "")


def render_status(app: str, reply: domains_pb2.GetAcmResponse,
                  now: datetime | None = None) -> list[str]:
    """certs:auto's lines."""
    label = output.app_label(app)
    if not reply.enabled:
        return [f"=== Automatic Certificate Management is disabled on {label}"]
    now = now or datetime.now(UTC)
    lines = [f"=== Automatic Certificate Management is enabled on {label}"]
    domains = list(reply.domains)
    statuses = {d.status for d in domains}
    if not domains:
        message = ("Add a custom domain to your app by running: "
                   "dynoctl domains:add <yourdomain.com>")
    elif "failed" in statuses:
        message = ("Some domains failed validation after multiple attempts, retry by "
                   "running: dynoctl certs:auto:refresh")
    elif "failing" in statuses:
        message = ("Some domains are failing validation, please verify that your DNS "
                   "matches: dynoctl domains")
    else:
        message = ""
    if domains:
        with_reason = any(d.reason for d in domains)
        head = ["Domain", "Status", *(["Reason"] if with_reason else []), "Last Updated"]
        rows: list[Sequence[str]] = [head]
        for d in domains:
            updated = (distance((now - output.when(d.updated_at)).total_seconds())
                       if d.HasField("updated_at") else "")
            rows.append([d.hostname, status_label(d.status),
                         *([d.reason] if with_reason else []), updated])
        lines.append("")
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                  for r in rows]
    if message:
        lines += ["", f"=== {message}"]
    return lines


def _get(app: str) -> domains_pb2.GetAcmResponse:
    reply: domains_pb2.GetAcmResponse = call(stub().GetAcm, domains_pb2.GetAcmRequest(app=app))
    return reply


def _wait(app: str, timeout: float = 600) -> domains_pb2.GetAcmResponse:
    """Until no domain is Waiting or Pending (Heroku's waitForCertIssuedOnDomains)."""
    deadline = time.monotonic() + timeout
    while True:
        reply = _get(app)
        if not any(d.status in UNSETTLED for d in reply.domains) or \
                time.monotonic() > deadline:
            return reply
        time.sleep(1)


def cmd_auto(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    reply = _wait(app) if args.wait else _get(app)
    if args.json:
        output.print_json(reply)
        return 0
    print("\n".join(render_status(app, reply)))
    return 0


def cmd_enable(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    call(stub().SetAcm, domains_pb2.SetAcmRequest(app=app, on=True))
    message = "Enabling Automatic Certificate Management"
    if not args.wait:
        print(f"{message}... starting. See status with dynoctl certs:auto or wait until "
              "active with dynoctl certs:auto --wait", file=sys.stderr)
    else:
        print(f"{message}... starting.", file=sys.stderr)
        reply = _wait(app)
        if any(d.status != "cert issued" for d in reply.domains):
            raise CliError("Error: The certificate could not be issued to all domains. "
                           "See status with dynoctl certs:auto.")
    print("=== Your certificate will now be managed by dynod. Check the status by running "
          "dynoctl certs:auto.")
    return 0


def cmd_refresh(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    call(stub().RefreshAcm, domains_pb2.RefreshAcmRequest(app=app))
    output.action("Refreshing Automatic Certificate Management")
    return 0


def cmd_disable(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    client.confirm_app(app, args.confirm, [
        f"WARNING: This command will disable Automatic Certificate Management from "
        f"{output.app_label(app)}. This will cause the certificate to be removed, causing "
        "SSL validation errors."], f"disabling ACM on {app} (its certificates are removed)",
        "disable ACM")
    call(stub().SetAcm, domains_pb2.SetAcmRequest(app=app, on=False))
    output.action("Disabling Automatic Certificate Management")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("certs:auto", parents=[common], help="show ACM status for an app")
    p.add_argument("--wait", action="store_true",
                   help="watch ACM status and display the status when complete")
    p.set_defaults(func=cmd_auto)
    p = sub.add_parser("certs:auto:enable", parents=[common],
                       help="enable ACM (a certificate for every custom domain)")
    p.add_argument("--wait", action="store_true", help="watch ACM status and exit when "
                   "complete")
    p.set_defaults(func=cmd_enable)
    p = sub.add_parser("certs:auto:refresh", parents=[common], help="refresh ACM for an app")
    p.set_defaults(func=cmd_refresh)
    p = sub.add_parser("certs:auto:disable", parents=[common], help="disable ACM for an app")
    p.add_argument("-c", "--confirm", metavar="APP", help="the app, to skip the prompt")
    p.set_defaults(func=cmd_disable)
