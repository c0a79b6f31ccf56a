"""privacy-gateway: a reverse proxy that enforces Zoho CRM's GDPR rules on every call."""

from gateway import compiled as _compiled

__version__ = "0.1.0"

_compiled.install()  # a compiled module whose source was edited since its build runs as Python
