"""HTTP: event intake, provider webhooks and unsubscribe links.

The ASGI app arrives with the real channels (Twilio, SendGrid, FCM, Web Push),
whose callbacks it receives. May import store, channels and workers.
"""

__all__: list[str] = []
