"""The ``tagger`` command: local tagging on the embedded defaults, the model, and the service."""

from tagger.cli.app import app

__all__ = ["app"]
