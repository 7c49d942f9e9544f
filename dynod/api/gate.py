"""Who may call what over TCP: every call but health and Login carries a token
(``authorization: Bearer <token>``), and each method has one rule in :data:`POLICY`
(a method not listed is for administrators, who call on the Unix socket).

The rules are data, so a reader sees the whole policy at once and a test checks that
every method of every service has one: ``USER`` (any signed-in user), ``app(path)``
(the user may use the app the request names at ``path``), ``owner(path)`` (the user
owns it), ``PUBLIC``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from dynod.api.peer import Caller, caller_of, is_network_peer, user_caller
from dynod.control import access, users
from dynod.errors import InvalidArgument, PermissionDenied
from dynod.store.protocol import Store


@dataclass(frozen=True)
class Rule:
    kind: str  # "public", "user", "app", "owner", "admin"
    path: str = ""


PUBLIC = Rule("public")
USER = Rule("user")
ADMIN = Rule("admin")


def app(path: str = "app") -> Rule:
    return Rule("app", path)


def owner(path: str = "app") -> Rule:
    return Rule("owner", path)


def _methods(service: str, rule: Rule, *names: str) -> dict[str, Rule]:
    return {f"/dynod.v1.{service}/{n}": rule for n in names}


POLICY: dict[str, Rule] = {
    "/grpc.health.v1.Health/Check": PUBLIC,
    "/grpc.health.v1.Health/Watch": PUBLIC,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": USER,
    "/dynod.v1.Auth/Login": PUBLIC,
    # A joining machine has no user token: the join token in the request admits it.
    "/dynod.v1.Cluster/Admit": PUBLIC,
    **_methods("Auth", USER, "WhoAmI", "ListTokens", "RevokeToken"),
    **_methods("Access", app(), "List", "Add", "Remove"),
    "/dynod.v1.Access/Transfer": owner(),
    **_methods("Apps", USER, "Create", "List"),
    "/dynod.v1.Apps/Get": app("name"),
    "/dynod.v1.Apps/Delete": owner("name"),
    **_methods("Addons", app(), "List", "Create", "Info", "Destroy", "Attach", "Detach",
               "Promote"),
    **_methods("Builds", app(), "Create", "List", "Get", "Output", "PurgeCache",
               "GetBuildpacks", "SetBuildpacks"),
    **_methods("Config", app(), "Get", "Set", "Unset"),
    **_methods("Domains", app(), "List", "Add", "Remove", "SetMaintenance",
               "GetMaintenance", "SetAcm", "GetAcm", "RefreshAcm"),
    "/dynod.v1.Domains/GetCA": USER,
    **_methods("Dynos", app(), "List", "Restart", "Stop"),
    **_methods("Features", app(), "List", "Get", "Set"),
    **_methods("Drains", app(), "List", "Add", "Remove"),
    **_methods("Formation", app(), "Get", "Scale", "Resize"),
    **_methods("Keys", USER, "List", "Add", "Remove"),
    "/dynod.v1.Logs/Tail": app(),
    "/dynod.v1.OneOff/Run": app("start.app"),
    **_methods("OneOff", app(), "RunDetached", "ReleaseOutput"),
    **_methods("Databases", app("ref.app"), "Info", "Resolve", "CaptureBackup",
               "RestoreBackup", "ScheduleBackups", "UnscheduleBackups",
               "RotateCredentials", "ResetDatabase"),
    **_methods("Databases", app(), "ListBackups", "GetBackup", "VerifyBackup",
               "DeleteBackup", "DownloadBackup", "ListSchedules"),
    **_methods("Releases", app(), "List", "Get", "Create", "Rollback"),
    **_methods("Slugs", app(), "Create", "Get", "Upload"),
    "/dynod.v1.Stacks/List": USER,
    "/dynod.v1.Stacks/SetAppStack": app(),
    "/dynod.v1.System/Version": USER,
}


def rule_for(method: str) -> Rule:
    return POLICY.get(method, ADMIN)


def field_at(message: Any, path: str) -> str:
    for part in path.split("."):
        message = getattr(message, part, "")
    return str(message)


def token_of(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            return value.removeprefix("Bearer ").strip()
    return ""


@dataclass(frozen=True)
class Gate:
    """Admits a call: on the Unix socket as before (root and the API group), over TCP
    by its token and the method's rule. Raises Unauthenticated, PermissionDenied."""

    store: Store

    def caller(self, method: str, context: grpc.ServicerContext) -> Caller | None:
        """The caller, before the request is read; None for a public method over TCP."""
        if not is_network_peer(context.peer()):
            return caller_of(context)  # refuses callers outside root and the API group
        rule = rule_for(method)
        if rule.kind == "public":
            return None
        token = users.authenticate(self.store, token_of(context))
        if rule.kind == "admin":
            raise PermissionDenied(
                f"{token.email} may not call {method.rsplit('/', 1)[-1]}: it is for the "
                "administrator, as root on the server (`sudo dynoctl ...`)")
        return user_caller(token.email)

    def check(self, method: str, caller: Caller | None, request: Any) -> None:
        """The rule's check of the request (an app the caller may use or owns)."""
        if caller is None or caller.user is None:
            return
        rule = rule_for(method)
        if rule.kind not in ("app", "owner"):
            return
        name = field_at(request, rule.path)
        if not name:
            raise InvalidArgument("name the app (-a APP)")
        access.require(self.store, caller.user, name, owner=rule.kind == "owner")


Check = Callable[[str, Caller | None, Any], None]
