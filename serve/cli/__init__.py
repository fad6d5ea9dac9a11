"""The `aligner` console script (`aligner = "serve.cli:main"`)."""

from serve.cli.main import main

__all__ = ["main"]
