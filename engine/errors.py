"""Runtime errors that are not the client's fault (CONTRACT §7.9).

    Unavailable            503, retryable; the request may be retried with the same id
      code "overloaded"          a bounded queue is full (raise --shard-queue-depth-max)
      code "storage_unavailable" the WAL failed (write/fsync error, disk full): fail-stop
"""


class Unavailable(Exception):
    """The request was not applied, or its outcome is unknown; 503 with `code`."""

    def __init__(self, code: str, message: str) -> None:
        assert code in ("overloaded", "storage_unavailable"), code
        super().__init__(message)
        self.code = code
        self.message = message
