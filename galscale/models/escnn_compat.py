"""The one place where galscale imports escnn, with its known incompatibility mended.

escnn issue #112 (open): with current scikit-learn, building an `R2Conv` between regular fields
raises `TypeError: np.matrix is not supported` from `escnn.group._numerical.null`, which calls
scikit-learn's `randomized_svd`. Setting that hook to None makes escnn use SciPy's exact SVD.
Import escnn through `escnn_modules()` so the fix is always applied first.
"""

from __future__ import annotations

from types import ModuleType


def escnn_modules() -> tuple[ModuleType, ModuleType]:
    """Return escnn's (gspaces, nn) modules with the issue-#112 workaround applied."""
    import escnn.group._numerical as numerical

    numerical.randomized_svd = None
    from escnn import gspaces
    from escnn import nn as enn

    return gspaces, enn


def check_install() -> None:
    """Fail loudly if the environment cannot run galscale's equivariant model."""
    import numpy as np

    if int(np.__version__.split(".")[0]) >= 2:
        raise SystemExit(
            f"NumPy {np.__version__} is installed but escnn needs NumPy < 2; reinstall with "
            "`pip install -c requirements/constraints.txt -e .`"
        )
    gspaces, enn = escnn_modules()
    space = gspaces.flipRot2dOnR2(N=8)
    field = enn.FieldType(space, [space.regular_repr])
    enn.R2Conv(field, field, kernel_size=3)
