"""Failures that end one image, each with a stable code and a sentence a person understands."""


class ImageFailure(Exception):
    """An image cannot be processed; `code` is stable for scripts, `message` is for people.

    `retryable` says whether trying the same image again later could succeed
    (a timeout or a 503 might; a 404 or a corrupt file will not).
    """

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __reduce__(self):  # pickles whole, so it crosses back from a compression child process
        return type(self), (self.code, self.message), {"retryable": self.retryable}
