"""Fake providers for tests, benchmarks and users' own integration tests.

Each fake is a small HTTP server on 127.0.0.1 that validates every request
against the provider's official OpenAPI spec (:mod:`channels.fakes.specs`),
records it, answers like the provider, and can be scripted to fail (error
codes, 429 with Retry-After, slow replies and timeouts). Install with the
``testing`` extra (``pip install loyalcast[testing]``); nothing in the
product imports this package.
"""

from .server import FakeProvider, RecordedRequest, Scripted, json_response
from .specs import PINNED, SpecUnavailable, load_spec, spec_path

__all__ = [
    "PINNED",
    "FakeProvider",
    "RecordedRequest",
    "Scripted",
    "SpecUnavailable",
    "json_response",
    "load_spec",
    "spec_path",
]
