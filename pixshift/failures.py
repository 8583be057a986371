"""PixShift's failures: each with a stable code for scripts and a sentence a person understands."""


class Failure(Exception):
    """Something that ends one piece of work; `code` is stable, `message` is for people.

    `retryable` says whether trying the same thing again later could succeed
    (a timeout or a 503 might; a 404 or a corrupt file will not).
    """

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __reduce__(
        self,
    ) -> tuple[
        type["Failure"], tuple[str, str], dict[str, bool]
    ]:  # pickles whole, so it crosses back from a compression child process
        return type(self), (self.code, self.message), {"retryable": self.retryable}


class ImageFailure(Failure):
    """An image cannot be processed: download, decoding, compression or storage failed."""


class Throttled(ImageFailure):
    """The image host asked PixShift to slow down (429, or 503): retryable, and its whole host waits.

    ``retry_after`` is the host's ``Retry-After`` in seconds, None when it gave none (then the
    pipeline backs off per host)."""

    def __init__(self, code: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(code, message, retryable=True)
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[type["Failure"], tuple[str, str], dict[str, object]]:  # type: ignore[override]
        return type(self), (self.code, self.message), {"retryable": True, "retry_after": self.retry_after}


class UrlRefused(Failure):
    """A stranger's URL PixShift will not or could not connect to: invalid, a blocked address, or
    unreachable (``connection_failed``, retryable)."""


class DeliveryFailure(Failure):
    """A webhook attempt got no answer from its receiver."""


# --- what a caller of the web services asked for cannot be done ----------------------------------
# Services raise these; the errors blueprint turns each into its HTTP status and a JSON body (or an
# error page for a browser). The code is the API's stable `error` field.


class InvalidInput(Failure):
    """The caller's input is wrong (400); ``details`` lists problems by row and column."""

    def __init__(
        self, code: str, message: str, *, details: list[dict[str, object]] | None = None, **extra: object
    ) -> None:
        super().__init__(code, message)
        self.details = details
        self.extra = extra


class NotFound(Failure):
    """No such thing, or not one this caller may see (404)."""


class Conflict(Failure):
    """The request's state does not allow the action (409): nothing to retry, already finished."""


class NotFinished(Conflict):
    """The request is still running; the action waits for its end (409, Retry-After)."""


class Unavailable(Failure):
    """A service PixShift needs is down; nothing was changed (503, Retry-After)."""


class NotAuthenticated(Failure):
    """The API needs a token (401)."""
