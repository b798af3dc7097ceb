"""The router's errors, importable without scikit-learn or torch (the gateway catches them)."""


class RouterLoadError(RuntimeError):
    """An artefact is missing, malformed or fails validation; the message says which and why."""
