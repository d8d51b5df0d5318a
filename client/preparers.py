"""Where each file is prepared (steps 0 to 3): the CPU decode workers, or the GPU first.

With ``decode="gpu"`` a file goes to :class:`~radserve.client.gpu_prepare.GpuPreparer` (one thread:
the device's work is serialised there) and, when the GPU leaves it, to the decode workers; every file
is counted in ``radserve_decoded_files`` by decoder and fallback reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Literal

from radserve.client.decode_pool import DecodePool
from radserve.client.flow import PreparedFile
from radserve.client.run_metrics import ClientMetrics
from radserve.errors import ConfigurationError
from radserve.model_card import ModelCard
from radserve.routing import RouterCard

if TYPE_CHECKING:
    from radserve.client.gpu_prepare import GpuPreparer

Decode = Literal["cpu", "gpu"]


class Preparers:
    """``async with Preparers(...) as preparers: prepared = await preparers.prepare(path, card)``."""

    def __init__(
        self,
        decode: Decode,
        workers: int,
        imports: tuple[str, ...],
        metrics: ClientMetrics,
        model: str,
        hide: Callable[[str], str] | None = None,
    ) -> None:
        if decode not in ("cpu", "gpu"):
            raise ConfigurationError(f"decode must be 'cpu' or 'gpu', got {decode!r}")
        self._decode = decode
        self._pool = DecodePool(workers, imports, hide=hide)
        self._metrics = metrics
        self._model = model
        self._gpu: GpuPreparer | None = None
        self._gpu_thread: ThreadPoolExecutor | None = None

    async def prepare(self, path: str, card: ModelCard | RouterCard) -> PreparedFile:
        reason = ""
        if self._gpu is not None:
            outcome = await asyncio.get_running_loop().run_in_executor(
                self._gpu_thread, self._gpu.prepare, path, card
            )
            if isinstance(outcome, PreparedFile):
                self._metrics.decoded_files.labels(self._model, "gpu", "").inc()
                return outcome
            reason = outcome
        self._metrics.decoded_files.labels(self._model, "cpu", reason).inc()
        return await self._pool.prepare(path, card)

    async def __aenter__(self) -> Preparers:
        if self._decode == "gpu":
            from radserve.client.gpu_prepare import GpuPreparer  # PyTorch and nvImageCodec: only when asked

            self._gpu = await asyncio.to_thread(GpuPreparer)
            self._gpu_thread = ThreadPoolExecutor(1, thread_name_prefix="radserve-gpu")
        await self._pool.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._gpu_thread is not None:
            self._gpu_thread.shutdown(wait=True)
        await self._pool.__aexit__(*exc_info)
