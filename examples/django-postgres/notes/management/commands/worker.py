"""`python manage.py worker`: take job ids off the Redis queue and mark each done."""

import os

from django.core.management.base import BaseCommand

from notes import queue
from notes.models import Job


class Command(BaseCommand):
    help = "process jobs queued on REDIS_URL"

    def handle(self, *args: object, **options: object) -> None:
        dyno = os.environ.get("DYNO", "worker")
        conn = queue.connect()
        self.stdout.write(f"worker {dyno}: waiting for jobs on {queue.QUEUE}", ending="\n")
        self.stdout.flush()
        while True:
            item = conn.brpop([queue.QUEUE], timeout=5)
            if item is None:
                continue
            job = Job.objects.get(id=int(item[1]))
            job.done_by = dyno
            job.save()
            self.stdout.write(f"worker {dyno}: done job {job.id} ({job.text})", ending="\n")
            self.stdout.flush()
