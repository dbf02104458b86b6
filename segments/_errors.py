"""The one error the rule language raises.

::

    ValueError
    └── RuleError       a rule is malformed: ``path`` says where, ``problem`` says what
"""

from __future__ import annotations

__all__ = ["RuleError"]


class RuleError(ValueError):
    """A segment rule is malformed; ``str(err)`` is ``f"{path}: {problem}"``.

    Args:
        path: where in the document the problem is, e.g. ``segment.all[2].op``.
        problem: what is wrong there, e.g. ``unknown operator "=>"``.
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem

    def __reduce__(self) -> tuple[type[RuleError], tuple[str, str]]:
        # The default reduce would call RuleError(message) and fail on unpickling.
        return (type(self), (self.path, self.problem))
