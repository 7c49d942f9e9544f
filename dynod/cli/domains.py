"""dynoctl domains, domains:add, domains:remove, maintenance[:on|:off],
certs[:add|:remove|:ca]."""

from __future__ import annotations

import argparse
from pathlib import Path

from dynod.cli import client, output
from dynod.cli.client import CliError, call
from dynod.v1 import domains_pb2, domains_pb2_grpc


def stub() -> domains_pb2_grpc.DomainsStub:
    return domains_pb2_grpc.DomainsStub(client.channel())


def cmd_domains(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    reply = call(stub().List, domains_pb2.ListDomainsRequest(app=app))
    if args.json:
        output.print_json(list(reply.domains))
        return 0
    default = [d for d in reply.domains if d.kind == "default"]
    custom = [d for d in reply.domains if d.kind != "default"]
    output.header(f"{output.app_label(app)} Heroku Domain")
    for d in default:
        print(d.hostname)
    if custom:
        print()
        output.header(f"{output.app_label(app)} Custom Domains")
        output.table([["Domain Name"], *([d.hostname] for d in custom)])
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    reply = call(stub().Add, domains_pb2.AddDomainRequest(app=app, hostname=args.hostname))
    if args.json:
        output.print_json(reply.domain)
    else:
        output.action(f"Adding {reply.domain.hostname} to {output.app_label(app)}", "done")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    call(stub().Remove, domains_pb2.RemoveDomainRequest(app=app, hostname=args.hostname))
    output.action(f"Removing {args.hostname} from {output.app_label(app)}", "done")
    return 0


def cmd_maintenance(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    if args.set is None:
        reply = call(stub().GetMaintenance, domains_pb2.GetMaintenanceRequest(app=app))
        print("on" if reply.on else "off")
        return 0
    call(stub().SetMaintenance, domains_pb2.SetMaintenanceRequest(app=app, on=args.set))
    verb = "Enabling" if args.set else "Disabling"
    output.action(f"{verb} maintenance mode for {output.app_label(app)}", "done")
    return 0


def _read(path: str, what: str) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read the {what} {path}: {exc}") from exc


def cmd_certs(args: argparse.Namespace) -> int:
    reply = call(stub().ListCerts, domains_pb2.ListCertsRequest())
    if args.json:
        output.print_json(list(reply.certs))
        return 0
    if not reply.certs:
        print("No SSL certificates. Add one with `dynoctl certs:add CERT KEY`.")
        return 0
    # Heroku's columns (certs:index), less Trusted and Domains, which need a public CA
    # and DNS to say.
    output.table([["Name", "Common Name(s)", "Expires", "Type"],
                  *([c.name, ", ".join(c.hostnames),
                     output.when(c.expires_at).strftime("%Y-%m-%d %H:%M %Z"), c.type]
                    for c in reply.certs)])
    return 0


def cmd_certs_ca(args: argparse.Namespace) -> int:
    reply = call(stub().GetCA, domains_pb2.GetCARequest())
    print(reply.certificate_pem, end="")
    return 0


def cmd_certs_add(args: argparse.Namespace) -> int:
    request = domains_pb2.AddCertRequest(certificate_pem=_read(args.cert, "certificate"),
                                         key_pem=_read(args.key, "key"))
    reply = call(stub().AddCert, request)
    if args.json:
        output.print_json(reply.cert)
    else:
        output.action("Adding SSL certificate", "done")
        print(f"Certificate {reply.cert.name} for {', '.join(reply.cert.hostnames)}")
    return 0


def cmd_certs_remove(args: argparse.Namespace) -> int:
    call(stub().RemoveCert, domains_pb2.RemoveCertRequest(name=args.name))
    output.action(f"Removing SSL certificate {args.name}", "done")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("domains", parents=[common], help="list the app's host names")
    p.set_defaults(func=cmd_domains)
    p = sub.add_parser("domains:add", parents=[common], help="route a host name to the app")
    p.add_argument("hostname")
    p.set_defaults(func=cmd_add)
    p = sub.add_parser("domains:remove", parents=[common], help="stop routing a host name")
    p.add_argument("hostname")
    p.set_defaults(func=cmd_remove)
    p = sub.add_parser("maintenance", parents=[common], help="show maintenance mode")
    p.set_defaults(func=cmd_maintenance, set=None)
    p = sub.add_parser("maintenance:on", parents=[common],
                       help="answer every request with a maintenance page (503, H80)")
    p.set_defaults(func=cmd_maintenance, set=True)
    p = sub.add_parser("maintenance:off", parents=[common], help="route requests again")
    p.set_defaults(func=cmd_maintenance, set=False)
    p = sub.add_parser("certs", parents=[common], help="list the router's certificates")
    p.set_defaults(func=cmd_certs)
    p = sub.add_parser("certs:add", parents=[common],
                       help="serve HTTPS with a certificate (PEM) and its key")
    p.add_argument("cert")
    p.add_argument("key")
    p.set_defaults(func=cmd_certs_add)
    p = sub.add_parser("certs:remove", parents=[common], help="remove a certificate")
    p.add_argument("name")
    p.set_defaults(func=cmd_certs_remove)
    p = sub.add_parser("certs:ca", parents=[common],
                       help="print the local CA certificate that signs the default "
                            "domain's (PEM; `> ca.pem` and trust it)")
    p.set_defaults(func=cmd_certs_ca)
