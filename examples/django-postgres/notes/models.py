from django.db import models


class Note(models.Model):
    """A row the web dyno writes and reads back."""

    text = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)


class Job(models.Model):
    """Queued on Redis by the web dyno; the worker dyno marks it done here."""

    text = models.CharField(max_length=200)
    done_by = models.CharField(max_length=50, blank=True, default="")
