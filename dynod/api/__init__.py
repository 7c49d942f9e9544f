"""gRPC servicers: protobuf in, frozen dataclasses to the domain, protobuf out.

Only this package imports the generated ``dynod.v1`` modules.
"""
