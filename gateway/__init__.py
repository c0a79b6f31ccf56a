"""privacy-gateway: a reverse proxy that enforces Zoho CRM's GDPR rules on every call."""

__version__ = "0.1.0"
