"""Real servers for tests: the gateway's own threaded uvicorn runner, on 127.0.0.1."""

from gateway.serving import ThreadedServer, free_port, serve

__all__ = ["ThreadedServer", "free_port", "serve"]
