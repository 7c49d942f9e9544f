import django
from django.http import HttpRequest, HttpResponse
from django.urls import path


def index(request: HttpRequest) -> HttpResponse:
    total = sum(n for n in range(1, 1001) if n % 3 == 0 or n % 5 == 0)
    return HttpResponse(f"Hello from Django {django.get_version()}: {total}\n",
                        content_type="text/plain")


urlpatterns = [path("", index)]
