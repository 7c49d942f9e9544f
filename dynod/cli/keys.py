"""dynoctl keys, keys:add FILE, keys:remove KEY."""

from __future__ import annotations

import argparse
from pathlib import Path

from dynod.cli import client, output
from dynod.cli.client import CliError, call
from dynod.v1 import keys_pb2, keys_pb2_grpc


def stub() -> keys_pb2_grpc.KeysStub:
    return keys_pb2_grpc.KeysStub(client.channel())


def cmd_keys(args: argparse.Namespace) -> int:
    reply = call(stub().List, keys_pb2.ListKeysRequest())
    if args.json:
        output.print_json([output.to_dict(k) for k in reply.keys])
        return 0
    if not reply.keys:
        print("You have no keys. Add one with `dynoctl keys:add ~/.ssh/id_ed25519.pub`.")
        return 0
    output.header("Keys")
    output.table([[k.id, k.type, k.fingerprint, k.comment or "-", k.owner] for k in reply.keys])
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        text = path.read_text()
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror}; give a public key file (.pub)") from exc
    key = call(stub().Add, keys_pb2.AddKeyRequest(public_key=text)).key
    output.action(f"Uploading {path} SSH key", f"done, {key.id} ({key.fingerprint})")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    key = call(stub().Remove, keys_pb2.RemoveKeyRequest(key=args.key)).key
    output.action(f"Removing {key.comment or key.id} SSH key", "done")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("keys", parents=[common], help="ssh keys that may git push")
    p.set_defaults(func=cmd_keys)
    p = sub.add_parser("keys:add", parents=[common], help="add a public key (FILE.pub)")
    p.add_argument("file", type=Path, metavar="FILE")
    p.set_defaults(func=cmd_add)
    p = sub.add_parser("keys:remove", parents=[common], help="remove a key")
    p.add_argument("key", help="the key's id, fingerprint or comment")
    p.set_defaults(func=cmd_remove)
