"""`raygan serve`: the generator on Ray Serve (app.py: the HTTP API and page; run.py: the command)."""

from raygan.serve.run import serve_checkpoint

__all__ = ["serve_checkpoint"]
