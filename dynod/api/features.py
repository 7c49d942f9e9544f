"""The Features service: an app's optional platform behaviours."""

from __future__ import annotations

import grpc

from dynod.api.daemon import Daemon
from dynod.api.peer import caller_of
from dynod.control import features
from dynod.v1 import features_pb2, features_pb2_grpc


def feature_to_proto(f: features.AppFeature) -> features_pb2.Feature:
    return features_pb2.Feature(name=f.info.name, description=f.info.description,
                                enabled=f.enabled, doc_url=f.info.doc_url)


class FeaturesServicer(features_pb2_grpc.FeaturesServicer):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def List(
        self, request: features_pb2.ListFeaturesRequest, context: grpc.ServicerContext
    ) -> features_pb2.ListFeaturesResponse:
        caller_of(context)
        return features_pb2.ListFeaturesResponse(features=[
            feature_to_proto(f) for f in features.list_features(self.daemon.store,
                                                                request.app)])

    def Get(
        self, request: features_pb2.GetFeatureRequest, context: grpc.ServicerContext
    ) -> features_pb2.GetFeatureResponse:
        caller_of(context)
        return features_pb2.GetFeatureResponse(feature=feature_to_proto(
            features.get_feature(self.daemon.store, request.app, request.name)))

    def Set(
        self, request: features_pb2.SetFeatureRequest, context: grpc.ServicerContext
    ) -> features_pb2.SetFeatureResponse:
        caller_of(context)
        return features_pb2.SetFeatureResponse(feature=feature_to_proto(
            features.set_feature(self.daemon.store, self.daemon.events, request.app,
                                 request.name, request.enabled)))


def register(server: grpc.Server, daemon: Daemon) -> str:
    features_pb2_grpc.add_FeaturesServicer_to_server(FeaturesServicer(daemon), server)
    return str(features_pb2.DESCRIPTOR.services_by_name["Features"].full_name)
