"""Compiling and rendering a template's parts, with a cache of compiled templates.

Workers render from the sources a campaign version stored, thousands of
members per batch, so compiled templates are cached in a bounded LRU keyed by
``(key, channel, part)``. ``key`` is the caller's name for an immutable set of
sources (a campaign version's id). Each entry also remembers the source it was
compiled from, and a lookup whose source differs recompiles, so a key reused
for edited sources can never render the old text.

The cache is shared by the threads of a dramatiq worker process and guarded by
a lock. Compiling happens outside the lock: two threads missing the same key at
once both compile, and the later one's template is kept, which is harmless.

After rendering, every part is stripped of leading and trailing whitespace; the
email subject and push title collapse whitespace runs to one space (a header
is one line); and the SMS text turns the no-break spaces CLDR puts in numbers
(French ``1 234``) into plain spaces, so the message stays in the GSM-7
alphabet instead of costing UCS-2 segments.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from typing import Any, NamedTuple

from jinja2 import Template, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError

from templates._environment import LoyalcastSandbox, make_environment
from templates._errors import TemplateError
from templates._parts import HTML_PART, SINGLE_LINE_PARTS, part_filename, parts_of

#: How many compiled templates a :class:`Renderer` keeps by default.
DEFAULT_CACHE_SIZE = 512

#: Characters turned into a plain space in SMS text (no-break, narrow no-break).
_SMS_SPACES = str.maketrans({"\u00a0": " ", "\u202f": " "})


class CacheInfo(NamedTuple):
    """Counters of a renderer's compiled-template cache, like ``functools`` has."""

    hits: int
    misses: int
    maxsize: int
    currsize: int


class _Entry(NamedTuple):
    filename: str
    source: str
    template: Template


class Renderer:
    """Compiles and renders templates in the sandbox, caching compiled templates.

    One renderer per worker process is enough; it is safe to share between
    threads.

    Args:
        cache_size: How many compiled templates (one per channel part) to keep.

    Raises:
        ValueError: ``cache_size`` is less than 1.
    """

    def __init__(self, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, got {cache_size}")
        self._html = make_environment(autoescape=True)
        self._plain = make_environment(autoescape=False)
        self._cache_size = cache_size
        self._cache: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    def check(self, name: str, sources: Mapping[str, Mapping[str, str]]) -> None:
        """Compile every part of every channel in ``sources``, keeping nothing.

        Args:
            name: The template name, used in error messages.
            sources: ``{channel: {part: source}}``, as from ``load_templates``.

        Raises:
            TemplateError: A channel is unknown, a part is missing or unknown,
                or a part does not compile (the error names its file and line).
        """
        for channel, channel_sources in sources.items():
            parts = parts_of(name, channel)
            for part in channel_sources:
                if part not in parts:
                    raise TemplateError(
                        part_filename(name, channel, part),
                        None,
                        f"{channel} has no part {part!r} (its parts: {', '.join(parts)})",
                    )
            for part in parts:
                filename = part_filename(name, channel, part)
                self._compile(channel, part, filename, _source(channel_sources, part, filename))

    def render(
        self,
        key: Hashable,
        name: str,
        sources: Mapping[str, Mapping[str, str]],
        channel: str,
        context: Mapping[str, Any],
    ) -> dict[str, str]:
        """Render one channel's parts for one member.

        Args:
            key: Names these sources for the cache, e.g. a campaign version id;
                must be hashable.
            name: The template name, used in error messages.
            sources: ``{channel: {part: source}}``, as from ``load_templates``.
            channel: The channel to render.
            context: The render context (``member``, ``campaign``, ``locale``,
                ``time_zone`` and any extras); see :mod:`templates`.

        Returns:
            ``{part: text}`` for each part of the channel.

        Raises:
            TemplateError: The channel or a part is missing, a part does not
                compile, or rendering fails for any reason (undefined variable,
                sandbox violation, bad filter argument, ...); the error names
                the file and, when known, the line.
        """
        parts = parts_of(name, channel)
        if channel not in sources:
            raise TemplateError(name, None, f"no sources for channel {channel!r}")
        channel_sources = sources[channel]
        variables = dict(context)
        rendered: dict[str, str] = {}
        for part in parts:
            filename = part_filename(name, channel, part)
            source = _source(channel_sources, part, filename)
            template = self._cached((key, channel, part), channel, part, filename, source)
            try:
                text = template.render(variables)
            except Exception as exc:
                raise _translate(exc, filename) from exc
            rendered[part] = _finish(channel, part, text)
        return rendered

    def cache_info(self) -> CacheInfo:
        """Return the compiled-template cache's counters.

        Returns:
            Hits, misses, the bound and the current number of entries.
        """
        with self._lock:
            return CacheInfo(self._hits, self._misses, self._cache_size, len(self._cache))

    def _cached(
        self, cache_key: Hashable, channel: str, part: str, filename: str, source: str
    ) -> Template:
        with self._lock:
            entry = self._cache.get(cache_key)
            if entry is not None and entry.source == source and entry.filename == filename:
                self._cache.move_to_end(cache_key)
                self._hits += 1
                return entry.template
            self._misses += 1
        template = self._compile(channel, part, filename, source)
        with self._lock:
            self._cache[cache_key] = _Entry(filename, source, template)
            self._cache.move_to_end(cache_key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return template

    def _compile(self, channel: str, part: str, filename: str, source: str) -> Template:
        environment = self._environment(channel, part)
        try:
            code = environment.compile(source, name=filename, filename=filename)
        except TemplateSyntaxError as exc:
            raise TemplateError(filename, exc.lineno, exc.message or str(exc)) from exc
        except Exception as exc:
            raise TemplateError(filename, None, f"{type(exc).__name__}: {exc}") from exc
        # Jinja gives a template its globals as a ChainMap over the environment's,
        # which every render copies key by key (a fifth of a render's time). No
        # global changes after the environment is made, so a plain dict is the same.
        return environment.template_class.from_code(
            environment, code, dict(environment.make_globals(None))
        )

    def _environment(self, channel: str, part: str) -> LoyalcastSandbox:
        return self._html if (channel, part) == HTML_PART else self._plain


def _source(channel_sources: Mapping[str, str], part: str, filename: str) -> str:
    source = channel_sources.get(part)
    if not isinstance(source, str):
        raise TemplateError(filename, None, "no source for this part")
    return source


def _translate(exc: Exception, filename: str) -> TemplateError:
    """Turn an exception raised while rendering into a TemplateError with a line."""
    if isinstance(exc, SecurityError):
        problem = f"not allowed in templates: {exc}"
    elif isinstance(exc, UndefinedError):
        problem = str(exc)
    else:
        problem = f"{type(exc).__name__}: {exc}"
    return TemplateError(filename, _line_in(exc, filename), problem)


def _line_in(exc: BaseException, filename: str) -> int | None:
    # Jinja rewrites the traceback so that frames of template code carry the
    # template's file name and source line; the innermost one is the culprit.
    line = None
    traceback = exc.__traceback__
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == filename:
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line


def _finish(channel: str, part: str, text: str) -> str:
    if (channel, part) in SINGLE_LINE_PARTS:
        return " ".join(text.split())
    if channel == "sms":
        text = text.translate(_SMS_SPACES)
    return text.strip()
