"""Subpackages that are also API functions: ``lethe.train(...)`` and ``lethe.unlearn(...)``.

``lethe.train`` is both the Python API call (DESIGN §4: ``lethe.train(config, overrides)``) and the
subpackage ``lethe.train`` (``from lethe.train.goldfish import goldfish_mask``). Importing a submodule makes
Python rebind the parent's attribute to the package, which would turn the function into a module. So the
package itself is made callable and forwards to the function in :mod:`lethe` (``lethe._train``, ...).
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any


def make_callable(module_name: str, function_name: str) -> None:
    """Calling the module ``module_name`` calls ``lethe.<function_name>``."""

    class CallablePackage(ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            import lethe

            return getattr(lethe, function_name)(*args, **kwargs)

    CallablePackage.__doc__ = f"``{module_name}(...)`` = :func:`lethe.{function_name}`"
    sys.modules[module_name].__class__ = CallablePackage
