from django.db import models


class Tally(models.Model):
    """A running total that every process adds to, read by /metrics: the sync runs and webhook
    attempts already folded out of their tables (humanapi_project.metrics), the 429s served, and
    the folds' watermarks."""

    key = models.CharField(max_length=200, primary_key=True)
    value = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.key} = {self.value}"
