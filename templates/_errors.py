"""The one error the templates package raises.

::

    Exception
     └── TemplateError    a template could not be found, compiled or rendered

Everything that goes wrong with a template (a missing file, a bad name, a
syntax error, an undefined variable, a sandbox violation, a filter given bad
arguments) surfaces as :class:`TemplateError`, with the foreign exception kept
as ``__cause__``. A worker catches this one type to fail a single delivery with
its reason instead of the whole batch.
"""

from __future__ import annotations


class TemplateError(Exception):
    """A template could not be found, compiled or rendered.

    Args:
        template: The template's file name relative to a template directory
            (``"winter-double-points/email.subject.j2"``), or the template name
            when the problem is not about one file.
        line: The 1-based line in that file, when known.
        problem: What went wrong, in words a marketer can act on.

    Attributes:
        template: As given.
        line: As given.
        problem: As given.
    """

    def __init__(self, template: str, line: int | None, problem: str) -> None:
        self.template = template
        self.line = line
        self.problem = problem
        where = template if line is None else f"{template}, line {line}"
        super().__init__(f"{where}: {problem}")

    def __reduce__(self) -> tuple[type[TemplateError], tuple[str, int | None, str]]:
        # Keeps the error picklable (result backends, process pools) despite
        # the three-argument constructor.
        return (type(self), (self.template, self.line, self.problem))
