"""The process around the computation: its configuration, MPI reduction (a no-op for one
process) and signals.

:func:`configure` is the one call that sets what the kernels need (see
:mod:`streamae.runtime.process`); importing this package sets nothing.
"""

from streamae.runtime.process import Configuration, configure

__all__ = ["Configuration", "configure"]
