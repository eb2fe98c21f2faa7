"""Typer's coercion of a parameter's value, built when a value first needs it.

Typer (0.2x) coerces each parameter it processes through a pydantic ``TypeAdapter``, and it
builds that adapter before it looks at the value: ``--help`` left unset, or ``--status`` left
at ``None``, made every ``grove`` command import pydantic's model machinery and build
adapters (~38 ms, 0.15x of the floor of issue 13's read commands) for values it then passes
through unchanged. :func:`defer` gives such a parameter a stand-in that builds typer's own
coercion on the first value that is not ``None``, and passes a plain ``str`` to a plain ``str``
parameter as it is (what typer's adapter returns for one). Every other value is coerced by
typer exactly as before, errors included.

Where typer has no such machinery (another version), :func:`defer` does nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

try:
    from typer._coercion import RuntimeParam, TypeDescriptor, build_runtime_param
except ImportError:  # a typer without runtime coercion: nothing to defer
    RuntimeParam = None  # type: ignore[assignment,misc]

__all__ = ["defer"]


if RuntimeParam is not None:

    @dataclass(frozen=True)
    class _Deferred(RuntimeParam):
        """Typer's runtime parameter for ``descriptor``, built on the first value to coerce
        (the base class returns ``None`` and an empty tuple itself)."""

        descriptor: TypeDescriptor = field(repr=False)
        built: list[RuntimeParam] = field(default_factory=list, repr=False, compare=False)

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            if (
                self.annotation is str
                and type(value) is str
                and self.parameter_info.parser is None
                and self.descriptor.file_annotation is None
            ):
                return value  # typer's str adapter returns str(value): the same string
            if not self.built:
                self.built.append(build_runtime_param(self.descriptor))
            return self.built[0]._coerce_value(value, param=param, ctx=ctx)


def defer(param: Any) -> None:
    """Give typer parameter ``param`` the deferred coercion (see the module's docstring), if
    typer has not built its own yet; a parameter of another kind is left as it is."""
    if RuntimeParam is None or getattr(param, "_runtime_param", False) is not None:
        return
    descriptor = getattr(param, "type_descriptor", None)
    if not isinstance(descriptor, TypeDescriptor):
        return
    param._runtime_param = _Deferred(
        annotation=descriptor.annotation,
        parameter_info=descriptor.parameter_info,
        descriptor=descriptor,
    )
