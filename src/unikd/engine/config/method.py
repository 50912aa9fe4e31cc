"""The values of ``method``: ce, ls, zipf and every loss of the :mod:`unikd.losses` registry (so registering
a loss adds its method)."""

from __future__ import annotations

from typing import Any

from unikd.registry import closest

# Methods that are not a loss registry name: ce and ls only use the cross-entropy term; zipf is zipf_ls.
# Every other method is a ``unikd.losses`` registry name, so registering a loss adds the method.
METHOD_ALIASES: dict[str, str | None] = {"ce": None, "ls": None, "zipf": "zipf_ls"}


def methods() -> tuple[str, ...]:
    """Valid values of ``method``: ce, ls, zipf and every registered loss."""
    from unikd.losses import LOSSES

    return (*METHOD_ALIASES, *(n for n in LOSSES.names() if n not in METHOD_ALIASES))


def check_method(method: str) -> None:
    valid = methods()
    if method not in valid:
        hint = closest(str(method), valid)
        did_you_mean = f" Did you mean {hint!r}?" if hint else ""
        raise ValueError(
            f"method={method!r} is not valid.{did_you_mean} Choose one of: {', '.join(valid)} "
            "(or list several terms under loss.terms)."
        )


def method_to_loss(method: str) -> str | None:
    """The ``unikd.losses`` registry name of ``method`` (None for ce and ls)."""
    return METHOD_ALIASES[method] if method in METHOD_ALIASES else method


def __getattr__(name: str) -> Any:
    # METHODS / METHOD_TO_LOSS follow the loss registry (computed on access, so late registrations count).
    if name == "METHODS":
        return methods()
    if name == "METHOD_TO_LOSS":
        return {m: method_to_loss(m) for m in methods()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
