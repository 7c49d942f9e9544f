"""POST /notes?text=T writes a row, GET /notes reads them; POST /jobs?text=T queues a job
on Redis, GET /jobs shows which the worker has done."""

import os
from pathlib import Path

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from notes import queue
from notes.models import Job, Note


def index(_request: HttpRequest) -> JsonResponse:
    """Which dyno answered, the code's VERSION and the add-on URLs it was given."""
    version = Path("VERSION")
    return JsonResponse({
        "dyno": os.environ.get("DYNO", ""),
        "version": version.read_text().strip() if version.exists() else "",
        "addons": sorted(k for k in os.environ if k.endswith("_URL")),
    })


@csrf_exempt
def notes(request: HttpRequest) -> JsonResponse:
    if request.method == "POST":
        note = Note.objects.create(text=request.GET["text"])
        return JsonResponse({"id": note.id, "text": note.text}, status=201)
    return JsonResponse({"notes": [n.text for n in Note.objects.order_by("id")]})


@csrf_exempt
def jobs(request: HttpRequest) -> JsonResponse:
    if request.method == "POST":
        job = Job.objects.create(text=request.GET["text"])
        queue.connect().lpush(queue.QUEUE, job.id)
        return JsonResponse({"id": job.id}, status=201)
    return JsonResponse({"jobs": {j.text: j.done_by for j in Job.objects.order_by("id")}})
