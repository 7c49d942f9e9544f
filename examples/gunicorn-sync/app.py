"""A plain WSGI app under gunicorn's sync workers: one request at a time per worker, each
connection closed after its response (the sync worker does not keep connections alive)."""


def app(environ, start_response):  # type: ignore[no-untyped-def]
    body = b"ok from gunicorn\n"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
