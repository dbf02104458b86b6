"""HTTP: provider webhooks, inbound SMS keywords, unsubscribe links and the campaign API.

:func:`create_app` builds the Starlette app (``loyalcast api`` serves it with
uvicorn). One module per provider (:mod:`api._twilio`, :mod:`api._sendgrid`),
the unsubscribe pages in :mod:`api._unsubscribe`, the campaign API in
:mod:`api._campaigns` (described by :mod:`api._openapi`); what they do to the store
lives in :mod:`workers.feedback`. May import store, channels and workers.
"""

from ._app import create_app

__all__ = ["create_app"]
