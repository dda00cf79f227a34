"""Runtime errors that are not the client's fault (CONTRACT §7.9).

    Unavailable            503, retryable; the request may be retried with the same id
      code "overloaded"          a bounded queue is full (raise --shard-queue-depth-max)
      code "storage_unavailable" the log failed (write/fsync error, disk full): fail-stop
      code "shutting_down"       the server is draining after SIGTERM
"""

from engine.core.codes import CODES


class Unavailable(Exception):
    """The request was not applied, or its outcome is unknown; 503 with `code`."""

    def __init__(self, code: str, message: str) -> None:
        assert CODES[code].status == 503, code
        super().__init__(message)
        self.code = code
        self.message = message
