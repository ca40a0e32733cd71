"""The recorder's device-side buffer: what episodes and draws produced between two flushes.

Closing episodes and drawing variations must not wait for the GPU, so the recorder keeps the
tensors they produce as they are (no copy, no transfer, no host synchronization) in named
columns. A flush packs every column into one preallocated staging buffer on the device and
copies it to pinned host memory in one non-blocking transfer followed by an event; whoever
encodes the records waits on that event, off the stepping thread. On the CPU there is no
transfer to overlap: a flush hands the segments over as they are, and whoever encodes them
concatenates them, so the stepping thread does no per-column work at all. The buffer has a
fixed capacity: the recorder flushes when it is full, so GPU memory stays bounded however long
the run.

Example::

    log = DeviceLog(torch.device("cuda"), capacity_bytes=1 << 20)
    log.append("env_id", env_ids)          # no copy; the tensor is kept until the flush
    packed = log.pack()                    # one device-to-host copy, returns at once
    columns = packed.wait()                # {"env_id": np.ndarray, ...}, on the encoding thread
    packed.release()
"""

from __future__ import annotations

import math
import queue
from collections import defaultdict

import numpy as np
import torch

_ALIGN = 8
_HOST_BUFFERS = 2  # one being encoded while the next flush fills the other


_WIDENED = (torch.float16, torch.bfloat16)


def _host_dtype(dtype: torch.dtype) -> torch.dtype:
    """Column dtypes numpy can read: half precision is widened to float32."""
    return torch.float32 if dtype in _WIDENED else dtype


class DeviceLog:
    """Named columns of tensor segments (rows along dim 0), kept on ``device`` until ``pack``."""

    def __init__(self, device: torch.device, capacity_bytes: int) -> None:
        if device.type == "cuda" and device.index is None:  # as the tensors on it name it
            device = torch.device("cuda", torch.cuda.current_device())
        self.device = device
        self._index = device.index if device.type == "cuda" else -1  # as get_device() says
        self.capacity_bytes = capacity_bytes
        self.nbytes = 0
        self._columns: dict[str, list[torch.Tensor]] = defaultdict(list)
        self._convert: set[str] = set()  # columns with a segment of another dtype or device
        self._staging = torch.empty(capacity_bytes, dtype=torch.uint8, device=device)
        self._free: queue.Queue[torch.Tensor] = queue.Queue()
        for _ in range(_HOST_BUFFERS):
            self._free.put(self._host(capacity_bytes))

    def _host(self, nbytes: int) -> torch.Tensor:
        pinned = self.device.type == "cuda"
        return torch.empty(nbytes, dtype=torch.uint8, pin_memory=pinned)

    @property
    def full(self) -> bool:
        return self.nbytes >= self.capacity_bytes

    def __len__(self) -> int:
        return sum(len(segments) for segments in self._columns.values())

    def append(self, column: str, tensor: torch.Tensor) -> None:
        """Keep ``tensor`` (rows along dim 0) as the next segment of ``column``; no copy."""
        segments = self._columns[column]
        widened = tensor.dtype in _WIDENED
        if (
            widened
            or tensor.get_device() != self._index
            or (segments and tensor.dtype != segments[0].dtype)
        ):
            self._convert.add(column)  # ``pack`` converts this column's segments one by one
        segments.append(tensor)
        self.nbytes += tensor.nbytes * (2 if widened else 1)

    def pack(self, block: bool = True) -> Packed | Segments | None:
        """Copy every column to host memory in one transfer (on the CPU: hand the segments
        over) and start a new log.

        Waits for a free host buffer (the encoder still holds both) unless ``block`` is false,
        in which case it returns ``None`` and keeps the log.
        """
        try:
            host = self._free.get(block=block)
        except queue.Empty:
            return None
        if self.device.type == "cpu":
            segments = Segments(self._columns, self._convert, host, self._free)
            self._columns = defaultdict(list)
            self._convert = set()
            self.nbytes = 0
            return segments
        layout: dict[str, tuple[int, torch.dtype, tuple[int, ...]]] = {}
        offset = 0
        for name, segments in self._columns.items():
            dtype = _host_dtype(segments[0].dtype)
            tail = tuple(segments[0].shape[1:])
            rows = sum(s.shape[0] for s in segments)
            layout[name] = (offset, dtype, (rows, *tail))
            offset += -(-rows * math.prod(tail) * dtype.itemsize // _ALIGN) * _ALIGN
        if offset > self._staging.numel():
            self._staging = torch.empty(offset, dtype=torch.uint8, device=self.device)
        if offset > host.numel():
            host = self._host(offset)
        for name, segments in self._columns.items():
            start, dtype, shape = layout[name]
            out = _view(self._staging, start, dtype, shape)
            if name in self._convert:
                segments = [s.to(self.device, dtype) for s in segments]
            if len(segments) == 1:
                out.copy_(segments[0])
            else:
                torch.cat(segments, out=out)
        event = None
        if offset:
            host[:offset].copy_(self._staging[:offset], non_blocking=True)
            if self.device.type == "cuda":
                event = torch.cuda.Event()
                event.record()
        self._columns = defaultdict(list)
        self._convert = set()
        self.nbytes = 0
        return Packed(host, layout, event, self._free)


def _view(
    buffer: torch.Tensor, start: int, dtype: torch.dtype, shape: tuple[int, ...]
) -> torch.Tensor:
    nbytes = math.prod(shape) * dtype.itemsize
    return buffer[start : start + nbytes].view(dtype).view(shape)


class Packed:
    """One flush's columns in host memory, valid once the copy's event has completed."""

    def __init__(
        self,
        host: torch.Tensor,
        layout: dict[str, tuple[int, torch.dtype, tuple[int, ...]]],
        event: torch.cuda.Event | None,
        free: queue.Queue[torch.Tensor],
    ) -> None:
        self._host = host
        self._layout = layout
        self._event = event
        self._free = free

    def wait(self) -> dict[str, np.ndarray]:
        """Wait for the copy (releases the GIL); the columns as numpy views of host memory."""
        if self._event is not None:
            self._event.synchronize()
        return {
            name: _view(self._host, start, dtype, shape).numpy()
            for name, (start, dtype, shape) in self._layout.items()
        }

    def release(self) -> None:
        """Give the host buffer back for a later flush (the numpy views become invalid)."""
        self._free.put(self._host)


class Segments:
    """One CPU flush's columns, still as the segments appended: ``wait`` concatenates them
    (on the thread that encodes). Holds one of the log's host buffers meanwhile, unused, so
    that flushes wait for the encoder exactly as on a GPU."""

    def __init__(
        self,
        columns: dict[str, list[torch.Tensor]],
        convert: set[str],
        token: torch.Tensor,
        free: queue.Queue[torch.Tensor],
    ) -> None:
        self._columns = columns
        self._convert = convert
        self._token = token
        self._free = free

    def wait(self) -> dict[str, np.ndarray]:
        """Each column as one new numpy array (one ``cat`` per column)."""
        out = {}
        for name, segments in self._columns.items():
            if name in self._convert:
                segments = [s.to("cpu", _host_dtype(s.dtype)) for s in segments]
            out[name] = torch.cat(segments).detach().numpy()
        return out

    def release(self) -> None:
        self._free.put(self._token)
