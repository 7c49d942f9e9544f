from django.http import HttpRequest, HttpResponse


def index(request: HttpRequest) -> HttpResponse:
    port = request.META.get("HTTP_X_FORWARDED_PORT", "")
    return HttpResponse(f"Getting started with Django over {request.scheme} (port {port})\n",
                        content_type="text/plain")
