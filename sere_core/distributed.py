"""Embedding on a Ray cluster: the one job that outgrows a machine (``sere embed --engine ray``).

Ray is an optional extra (``pip install sere-studio[ray]``), imported only inside these functions.
Each worker is a Ray actor that builds the encoder once and runs
:func:`sere_core.features.embed_entry` on batches of files: it reads the audio and writes the
embedding cache itself, so the audio and the cache folder must be at paths every node sees (a
shared filesystem), and every node needs SERE Studio installed. The driver keeps a bounded number
of batches in flight and yields the results in manifest order, so the features folder it writes is
the one the local engine writes.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from sere_core.audio import AudioConfig
from sere_core.errors import ConfigError, EngineError, SereError
from sere_core.features import FileResult
from sere_core.manifests import ManifestEntry

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install sere-studio[ray]"


@dataclass(frozen=True)
class RayConfig:
    """Where to run and how wide. ``address=None`` starts a Ray instance on this machine."""

    address: str | None = None
    num_workers: int | None = None  # None: one per CPU of the cluster
    cpus_per_worker: float = 1.0
    max_batch_files: int = 16  # files per task; fewer when that would leave workers idle


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise EngineError(f"the Ray engine needs Ray, an optional extra: {INSTALL_HINT}") from err
    return ray


class _Worker:
    """A Ray actor: one encoder, loaded at its first cache miss, embedding batches of files."""

    def __init__(self, encoder_name: str, cache_root: str, audio_config: AudioConfig, threads: int) -> None:
        import torch

        from sere_core.cache import EmbeddingCache
        from sere_core.encoders import get_encoder

        torch.set_num_threads(threads)  # as many as the CPUs Ray reserved for this worker
        self.encoder = get_encoder(encoder_name)
        self.cache = EmbeddingCache(cache_root)
        self.audio_config = audio_config

    def embed(self, entries: list[ManifestEntry]) -> tuple[str, list[FileResult]]:
        import ray

        from sere_core.features import embed_entry

        node = ray.get_runtime_context().get_node_id()
        return node, [embed_entry(e, self.encoder, self.cache, self.audio_config) for e in entries]


class RayEngine:
    """An :data:`~sere_core.features.Engine` over a Ray cluster; ``files_per_node`` says who did what."""

    def __init__(self, encoder_name: str, cache_root: Path, audio_config: AudioConfig = AudioConfig(),
                 config: RayConfig = RayConfig()) -> None:
        if config.num_workers is not None and config.num_workers < 1:
            raise ConfigError(f"--num-workers must be at least 1, got {config.num_workers}.")
        self.encoder_name = encoder_name
        self.cache_root = Path(cache_root).expanduser().resolve()
        self.audio_config = audio_config
        self.config = config
        self.files_per_node: Counter[str] = Counter()

    def __call__(self, entries: Sequence[ManifestEntry]) -> Iterator[FileResult]:
        if not entries:
            return
        ray = _import_ray()
        from ray.util import ActorPool

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # SERE Studio never phones home
        started_here = not ray.is_initialized()
        if started_here:
            try:
                ray.init(address=self.config.address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as err:
                where = self.config.address or "this machine"
                raise EngineError(f"could not start or reach Ray on {where}: {err}") from err
        workers: list[Any] = []
        try:
            count = self.config.num_workers or max(
                1, int(ray.cluster_resources().get("CPU", 1) // self.config.cpus_per_worker))
            actor = ray.remote(_Worker).options(num_cpus=self.config.cpus_per_worker,
                                                max_restarts=2, max_task_retries=2)
            threads = max(1, int(self.config.cpus_per_worker))
            workers = [actor.remote(self.encoder_name, str(self.cache_root), self.audio_config, threads)
                       for _ in range(count)]
            size = max(1, min(self.config.max_batch_files, math.ceil(len(entries) / (4 * count))))
            batches = (list(entries[i : i + size]) for i in range(0, len(entries), size))
            pool = ActorPool(workers)
            for batch in islice(batches, 2 * count):  # a bounded window: results wait in order
                pool.submit(lambda worker, b: worker.embed.remote(b), batch)
            log.info("ray: %d files in batches of %d on %d workers", len(entries), size, count)
            while pool.has_next():
                try:
                    node, results = pool.get_next()
                except ray.exceptions.RayTaskError as err:
                    if isinstance(err.cause, SereError):
                        raise err.cause from None
                    raise EngineError(f"a Ray worker failed: {err.cause!r}") from err
                except ray.exceptions.RayError as err:
                    raise EngineError(f"the Ray cluster failed while embedding: {err}") from err
                self.files_per_node[node] += len(results)
                following = next(batches, None)
                if following is not None:
                    pool.submit(lambda worker, b: worker.embed.remote(b), following)
                yield from results
        finally:
            for worker in workers:
                ray.kill(worker)
            if started_here:
                ray.shutdown()
