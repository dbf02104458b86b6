"""The sandboxed Jinja2 environment templates are compiled in.

Marketers write templates, so they run in Jinja's sandbox: no attribute that
starts with an underscore, no function internals, no ``str.format`` tricks
(``{{ ''.__class__.__mro__ }}`` fails). It is the *immutable* sandbox, so a
template cannot change the ``member`` dict or any other list, dict or set it is
given (``{{ member.clear() }}`` fails); the same context is shared by every part
of a message. On top of Jinja's own range limit, ``*`` and ``**`` refuse to
build huge strings, lists or numbers, which would stall a worker in C code that
no time limit can interrupt.

Missing data is an error, never a blank: undefined variables raise
(``StrictUndefined``; test with ``is defined`` or use ``|default``), and so does
printing ``None``, so a member without a first name never gets "Hi None!".
Give a fallback in the template: ``{{ member.first_name or "there" }}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jinja2 import StrictUndefined, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from templates._formatting import FILTERS

#: Longest string, list or tuple that ``*`` may build.
MAX_REPEAT_LENGTH = 100_000
#: Largest integer exponent ``**`` accepts.
MAX_EXPONENT = 1_000


class LoyalcastSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with limits on ``*`` and ``**``."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """Apply an intercepted binary operator after checking its result stays small.

        Args:
            context: The render context.
            operator: ``"*"`` or ``"**"``.
            left: Left operand.
            right: Right operand.

        Returns:
            What the operator returns.

        Raises:
            SecurityError: The result would be unreasonably large.
        """
        if operator == "**" and _is_int(right) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponent {right} is too large (limit {MAX_EXPONENT})")
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                if (
                    isinstance(sequence, str | Sequence)
                    and _is_int(times)
                    and len(sequence) * times > MAX_REPEAT_LENGTH
                ):
                    raise SecurityError(
                        f"repetition would build {len(sequence) * times} items "
                        f"(limit {MAX_REPEAT_LENGTH})"
                    )
        return super().call_binop(context, operator, left, right)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _refuse_none(value: Any) -> Any:
    """Fail on ``{{ x }}`` when x is None, as StrictUndefined does for missing names."""
    if value is None:
        raise UndefinedError(
            'printed value is None; give a fallback such as {{ value or "..." }} '
            "or test it with {% if %}"
        )
    return value


def make_environment(*, autoescape: bool) -> LoyalcastSandbox:
    """Build a template environment.

    Args:
        autoescape: Escape HTML in ``{{ }}`` output; on only for the email
            ``html`` part (escaping an SMS would show ``&amp;``).

    Returns:
        A sandboxed environment with ``StrictUndefined``, ``trim_blocks`` and
        ``lstrip_blocks`` on, and the Babel filters of
        :mod:`templates._formatting` registered.
    """
    environment = LoyalcastSandbox(
        autoescape=autoescape,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_refuse_none,
    )
    environment.filters.update(FILTERS)
    return environment
