"""Slugs: content-addressed blobs and their safe unpack into shared trees."""
