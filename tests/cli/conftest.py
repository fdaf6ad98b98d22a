"""The CLI's remote commands talk to a real control-center app: the web tests' factory."""

from tests.web.conftest import web_factory

__all__ = ["web_factory"]
