"""Django ``TextChoices`` derived from a vocabulary of :mod:`core.contracts`.

The contracts declare each vocabulary once (values and labels, no Django); a model field's choices are made
from it here, so a value the admin offers is a value the stages exchange, and the values stored stay the
contracts' (a label changed there is a migration that alters choices only, no data).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from django.db import models

_Value = TypeVar("_Value", bound=str)  # a vocabulary's Literal type


def text_choices(name: str, labels: Mapping[_Value, str], *, module: str) -> type[models.TextChoices]:
    """A ``TextChoices`` class named ``name`` (defined in ``module``, for its repr and pickling) with a
    member per value of ``labels``, in its order: member ``PAGE_ONLY`` is value ``"page_only"``."""
    members = [(value.upper(), (value, label)) for value, label in labels.items()]
    # Django documents Enum's functional API for choices; django-stubs types only the class syntax.
    choices: type[models.TextChoices] = models.TextChoices(name, members, module=module)  # type: ignore[call-overload]
    return choices
