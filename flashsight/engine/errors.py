"""Errors the engine raises at its boundary; the server maps each to an HTTP status."""


class EngineError(Exception):
    """Base class: a request the engine could not serve."""


class InvalidRequestError(EngineError):
    """The request itself is wrong (too long, an image the model cannot take...): a 400."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class EngineOverloadedError(EngineError):
    """The engine cannot take the request now; the client may retry later: a 503."""

    def __init__(self, message: str, retry_after_s: float = 1.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EngineUnavailableError(EngineOverloadedError):
    """The engine is (re)starting and serves nothing until it is back: a 503 with Retry-After."""


class EngineDeadError(EngineError):
    """The engine failed while serving; the request did not complete: a 500 or a stream error."""


class ModelNotFoundError(EngineError):
    """The model could be neither found on disk nor fetched from the hub."""
