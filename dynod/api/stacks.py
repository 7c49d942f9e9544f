"""The Stacks service."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import grpc

from dynod import paths
from dynod.api.daemon import Daemon
from dynod.api.peer import caller_of
from dynod.build import layers, pipeline, stacks
from dynod.control import builds
from dynod.v1 import stacks_pb2, stacks_pb2_grpc


def stack_to_proto(daemon: Daemon, name: str) -> stacks_pb2.Stack:
    defn = stacks.get_stack(name)
    root = paths.stack_root(daemon.settings.state_dir, name)
    built = stacks.is_current(root, defn)
    have = layers.built_layers(daemon.settings.state_dir, name) if built else ()
    return stacks_pb2.Stack(
        name=name, suite=defn.suite, built=built, default=name == stacks.DEFAULT_STACK,
        python=(stacks.python_version(root) or "") if built else "",
        layers=[stacks_pb2.StackLayer(name=n, runtimes=layer.runtimes,
                                      buildpacks=list(layer.buildpacks), built=n in have)
                for n, layer in layers.LAYERS.items()])


class StacksServicer(stacks_pb2_grpc.StacksServicer):
    def __init__(self, daemon: Daemon, builder: pipeline.Builder) -> None:
        self.daemon = daemon
        self.builder = builder  # builds a stack, one at a time with the builds' own

    def List(
        self, request: stacks_pb2.ListStacksRequest, context: grpc.ServicerContext
    ) -> stacks_pb2.ListStacksResponse:
        caller_of(context)
        return stacks_pb2.ListStacksResponse(
            stacks=[stack_to_proto(self.daemon, n) for n in sorted(stacks.STACKS)])

    def Build(
        self, request: stacks_pb2.BuildStackRequest, context: grpc.ServicerContext
    ) -> Iterator[stacks_pb2.BuildStackResponse]:
        caller_of(context)
        name = request.name or stacks.DEFAULT_STACK
        defn = stacks.get_stack(name)
        wanted = tuple(request.layers)
        for layer in wanted:
            layers.get_layer(layer)
        state = self.daemon.settings.state_dir
        if stacks.is_current(paths.stack_root(state, name), defn) and set(wanted) <= set(
                layers.built_layers(state, name)):
            what = f"Stack {name}" + "".join(f" and its {n} layer" for n in wanted)
            yield stacks_pb2.BuildStackResponse(
                line=f"{what} {'are' if wanted else 'is'} current ({defn.suite}); "
                     "nothing to rebuild.")
            yield stacks_pb2.BuildStackResponse(stack=stack_to_proto(self.daemon, name))
            return
        lines: queue.Queue[str | BaseException | None] = queue.Queue()

        def work() -> None:
            try:
                self.builder.ensure_layers(name, wanted, lines.put)
                lines.put(None)
            except BaseException as exc:
                lines.put(exc)

        threading.Thread(target=work, name=f"stack-{name}", daemon=True).start()
        while True:
            item = lines.get()
            if item is None:
                yield stacks_pb2.BuildStackResponse(stack=stack_to_proto(self.daemon, name))
                return
            if isinstance(item, BaseException):
                raise item
            yield stacks_pb2.BuildStackResponse(line=item)

    def SetAppStack(
        self, request: stacks_pb2.SetAppStackRequest, context: grpc.ServicerContext
    ) -> stacks_pb2.SetAppStackResponse:
        caller_of(context)
        got = builds.set_stack(self.daemon.store, request.app,
                               stacks.get_stack(request.stack).name)
        return stacks_pb2.SetAppStackResponse(stack=got.stack)


def register(server: grpc.Server, daemon: Daemon, builder: pipeline.Builder) -> str:
    stacks_pb2_grpc.add_StacksServicer_to_server(StacksServicer(daemon, builder), server)
    return str(stacks_pb2.DESCRIPTOR.services_by_name["Stacks"].full_name)
