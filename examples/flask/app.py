"""The example Flask app: `make up` deploys it; it answers on / with a simple page."""

import os

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index() -> str:
    dyno = os.environ.get("DYNO", "?")
    return f"<!doctype html><title>dynod</title><h1>Hello from dynod</h1><p>dyno {dyno}</p>\n"
