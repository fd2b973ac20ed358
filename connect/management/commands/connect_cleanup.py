from typing import Any

from django.core.management.base import BaseCommand

from connect.oauth import states_cleanup
from connect.ratelimit import buckets_cleanup
from connect.services import revoke_expired_tokens


class Command(BaseCommand):
    help = "Delete expired tokens, OAuth states and rate-limit buckets, in batches (safe to run any time)."

    def handle(self, *args: Any, **options: Any) -> None:
        tokens = revoke_expired_tokens()
        states = states_cleanup()
        buckets = 0
        while True:
            removed = buckets_cleanup()
            buckets += removed
            if not removed:
                break
        self.stdout.write(f"deleted {tokens} tokens, {states} OAuth states, {buckets} rate-limit buckets")
