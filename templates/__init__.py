"""Per-channel message templates: loading, sandboxed compiling, rendering.

A template is a directory of Jinja2 files, one per channel part (SMS ``text``;
email ``subject``, ``html`` and ``text``; push ``title`` and ``body``; see
:data:`CHANNEL_PARTS`). :func:`load_templates` reads their sources;
:class:`Renderer` checks and renders them. This package imports nothing of
loyalcast's.

Render context
--------------
Callers render with this context; templates may rely on it:

``member``
    A dict with ``id``, ``external_id``, ``name``, ``first_name``, ``email``,
    ``phone``, ``tier``, ``points_balance``, ``locale``, ``time_zone``,
    ``enrolled_at``, ``purchases_count`` and ``attributes`` (a dict of the
    program's own fields). Fields the store has no value for are ``None``.
``campaign``
    A dict with ``name`` and ``category``.
``locale``
    The member's locale (``"de_DE"`` or ``"de-DE"``), used by the formatting
    filters; an unknown one falls back to ``en`` instead of failing the send.
``time_zone``
    The member's IANA time zone, used by ``date`` and ``datetime``; an unknown
    one falls back to UTC.
anything else
    Extra keys the caller adds, such as a reminder's ``expiring_points`` and
    ``expires_on``. The built-in email templates show an unsubscribe link when
    ``unsubscribe_url`` is given.

Templates read dict keys as attributes (``member.first_name``); a key that
collides with a dict method (``items``, ``keys``, ``get``...) needs the
subscript form: ``member.attributes["items"]``.

Rules templates run under
-------------------------
- Jinja's immutable sandbox (no Python internals, no mutating the context).
- ``StrictUndefined``, and printing ``None`` is an error too: give fallbacks
  with ``or``, ``|default`` or ``{% if ... is defined %}``.
- HTML autoescape in the email ``html`` part only.
- ``trim_blocks`` and ``lstrip_blocks``; each rendered part is stripped.
- Filters ``number``, ``currency``, ``date``, ``datetime`` (Babel, in the
  member's locale and time zone).

Example::

    sources = load_templates("winter-double-points", ["push", "email"])
    renderer = Renderer()
    renderer.check("winter-double-points", sources)
    message = renderer.render(version_id, "winter-double-points", sources, "push", context)
    message["title"], message["body"]
"""

from templates._errors import TemplateError
from templates._loading import load_templates
from templates._parts import CHANNEL_PARTS
from templates._rendering import Renderer

__all__ = ["CHANNEL_PARTS", "Renderer", "TemplateError", "load_templates"]
