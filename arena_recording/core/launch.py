"""Launching a Triton kernel again without Triton's per-call argument binding.

Triton's ``kernel[grid](...)`` binds, type-checks and specializes every argument in Python at
each call: 30-60 µs of host time, more than a reset batch's draw takes on the GPU, and on the
step path of an env whose step is host-bound. A compiled kernel serves every later launch whose
arguments specialize the same way, so :class:`Launcher` goes through Triton once per
specialization (which compiles) and then calls the compiled kernel with the same argument list.

What Triton specializes on, and so what the cache key holds: the device, the constexprs, each
tensor's dtype and whether its address is 16-byte aligned, and whether each integer fits in 32
bits. A kernel with an integer argument outside its ``do_not_specialize`` (Triton specializes
on such values), a launch hook installed (a profiler) and Triton's interpreter take Triton's
own path at every launch.

Example::

    launch = Launcher(_my_kernel, enable_fp_fusion=False)
    launch(grid, out, table, n, BLOCK=256)  # the same arguments as _my_kernel[(grid,)](...)
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import torch

try:
    import triton
except ImportError:
    triton = None

_INT32 = 2**31
log = logging.getLogger(__name__)


def _on(device: torch.device) -> contextlib.AbstractContextManager:
    """Triton launches on the current device, and switching costs host time, so switch only
    when ``device`` is another."""
    if device.index != torch.cuda.current_device():
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def _hooked() -> bool:
    """Whether a launch hook is installed (Triton calls it only on its own path); Triton
    3.4+ keeps its hooks in a chain that is empty when none is."""
    knobs = getattr(triton, "knobs", None)
    hook = None if knobs is None else knobs.runtime.launch_enter_hook
    return hook is not None and bool(getattr(hook, "calls", True))


class Launcher:
    """Launches one Triton kernel; see the module docstring."""

    def __init__(self, kernel: Any, **options: Any) -> None:
        self.kernel = kernel
        self.options = options
        self._compiled: dict[tuple, Any] = {}
        # positions whose integer values Triton specializes on (a kernel with any such integer
        # argument always launches through Triton: the key would not tell its kernels apart)
        self._by_value = {
            p.num
            for p in getattr(kernel, "params", ())
            if not p.is_constexpr and not getattr(p, "do_not_specialize", False)
        }
        # the interpreter runs kernels in Python: nothing compiled to call again
        self._direct = os.environ.get("TRITON_INTERPRET", "0") in ("", "0")

    def __call__(self, grid: int, *args: Any, **constexprs: Any) -> None:
        """Launch ``grid`` programs with ``args`` (every argument before the constexprs, in the
        kernel's order; the first a tensor on the device to launch on) and ``constexprs`` (by
        name, in the kernel's order)."""
        if not self._direct:
            self.kernel[(grid,)](*args, **constexprs, **self.options)
            return
        device = args[0].device
        with _on(device):
            self._launch(device, grid, args, constexprs)

    def _launch(
        self, device: torch.device, grid: int, args: tuple, constexprs: dict[str, Any]
    ) -> None:
        key = (
            device.index,
            *constexprs.values(),
            *(
                (a.dtype, a.data_ptr() % 16 == 0)
                if isinstance(a, torch.Tensor)
                else -_INT32 <= a < _INT32
                for a in args
            ),
        )
        compiled = self._compiled.get(key)
        if compiled is None or _hooked():
            compiled = self.kernel[(grid,)](*args, **constexprs, **self.options)
            if compiled is not None and not any(
                i in self._by_value for i, a in enumerate(args) if not isinstance(a, torch.Tensor)
            ):
                self._compiled[key] = compiled
            return
        stream = triton.runtime.driver.active.get_current_stream(device.index)
        try:  # no launch metadata and no hooks: there are none
            compiled.run(
                grid, 1, 1, stream, compiled.function, compiled.packed_metadata, None, None, None,
                *args, *constexprs.values(),
            )  # fmt: skip
        except TypeError as error:  # another Triton's entry point: its own path from now on
            log.warning("arena-recording: Triton kernels launch through Triton (%s)", error)
            self._direct = False
            self.kernel[(grid,)](*args, **constexprs, **self.options)
