"""Layouts made ahead of time in background processes.

Each env's episodes are a deterministic stream (:class:`EpisodeStream`), so a worker
process can run the stream and the env only pops finished layouts: minigrid's reset
(about a millisecond) leaves the stepping process. Worker ``w`` owns the envs
``b ≡ w (mod workers)``; the parent asks for one more layout per env each time it
consumes one, keeping ``depth`` in flight, and blocks only when an env's queue is empty.
Reseeding, restoring or switching an env's tasks (a schedule's phase) bumps its epoch,
so layouts of the old stream that are still in flight are dropped.

Workers are :mod:`metarim.envs._ipc` processes talking length-prefixed pickles over two
pipes (no ``fork`` of a process that holds torch threads, and no re-import of the
caller's ``__main__`` as ``multiprocessing``'s spawn does). Protocol (parent → worker):
first ``(specs, grid_size, cache_size)`` (a spec is ``(b, task, seed, task stream or
None)``), then ``("take", [b, ...])``, ``("seed", b, epoch, seed)``, ``("state", b, epoch,
rng_state, task stream or None)``, EOF to stop; (worker → parent): lists of ``(b, epoch,
layout)``.
"""

from __future__ import annotations

import collections
from typing import Any

from metarim.envs import _ipc
from metarim.envs.tensor.layouts import EpisodeStream, GeneratorCache, Layout, LayoutGenerator
from metarim.tasks.schedule import TaskStream

__all__ = ["PrefetchSource"]


def _worker_main(rfd: int, wfd: int) -> None:
    """Worker loop: runs the streams of its envs and answers ``take`` requests."""
    specs, grid_size, cache_size = _ipc.recv(rfd)
    gens: dict[Any, LayoutGenerator] = {}
    cache = GeneratorCache(grid_size, cache_size)
    streams: dict[int, EpisodeStream] = {}
    for b, task, seed, tasks in specs:
        key = (task.level, task.env_kwargs)
        if tasks is not None:
            streams[b] = EpisodeStream(task, seed, tasks=tasks, generators=cache)
            continue
        if key not in gens:
            gens[key] = LayoutGenerator(task.level, task.env_kwargs, grid_size=grid_size,
                                        cache_size=cache_size)
        streams[b] = EpisodeStream(task, seed, gens[key])
    epochs = dict.fromkeys(streams, 0)
    while True:
        try:
            msg = _ipc.recv(rfd)
        except EOFError:
            return
        if msg[0] == "take":
            try:
                _ipc.send(wfd, [(b, epochs[b], streams[b].next()) for b in msg[1]])
            except BrokenPipeError:  # the parent closed: stop quietly
                return
        elif msg[0] == "seed":
            _, b, epochs[b], seed = msg
            streams[b].reseed(seed)
        elif msg[0] == "state":
            _, b, epochs[b], state, tasks = msg
            streams[b].rng.bit_generator.state = state
            if tasks is not None:
                streams[b].tasks = tasks
        else:
            return


class PrefetchSource:
    """Layout source backed by ``workers`` processes (see module docstring).

    Args:
        tasks: one task per env.
        seeds: one stream seed per env.
        grid_size: common ``(width, height)`` of the layouts.
        workers: number of processes, ``>= 1``.
        depth: layouts kept in flight per env.
        cache_size: per-level layout cache of each worker.
        streams: under a schedule, one :class:`~metarim.tasks.schedule.TaskStream` per env.
    """

    def __init__(self, tasks: list[Any], seeds: list[int], grid_size: tuple[int, int], *,
                 workers: int, depth: int, cache_size: int = 0,
                 streams: list[TaskStream] | None = None) -> None:
        self.tasks, self.grid_size, self.depth, self.cache_size = tasks, grid_size, depth, cache_size
        n = len(tasks)
        self.workers = min(workers, n)
        self._pool = _ipc.WorkerPool(_worker_main, self.workers)
        self.conns = self._pool.conns  # (read fd, write fd) per worker
        for w, (_, wfd) in enumerate(self.conns):
            specs = [(b, tasks[b], seeds[b], streams[b] if streams else None) for b in range(w, n, self.workers)]
            _ipc.send(wfd, (specs, grid_size, cache_size))
        self.queues: list[collections.deque[Layout]] = [collections.deque() for _ in range(n)]
        self.epochs = [0] * n
        self._gens: dict[Any, LayoutGenerator] = {}
        self._cache = GeneratorCache(grid_size)
        self._request(list(range(n)) * depth)

    def _request(self, idx: list[int]) -> None:
        per: list[list[int]] = [[] for _ in self.conns]
        for b in idx:
            per[b % self.workers].append(b)
        for (_, wfd), bs in zip(self.conns, per):
            if bs:
                _ipc.send(wfd, ("take", bs))

    def _receive(self, conn: tuple[int, int]) -> None:
        for b, epoch, lay in _ipc.recv(conn[0]):
            if epoch == self.epochs[b]:
                self.queues[b].append(lay)

    def take(self, idx: list[int]) -> list[Layout]:
        """Pops the next layout of each env in ``idx`` (waiting only for empty queues)."""
        for conn in self.conns:
            while _ipc.ready(conn[0]):
                self._receive(conn)
        out = []
        for b in idx:
            q = self.queues[b]
            while not q:
                self._receive(self.conns[b % self.workers])
            out.append(q.popleft())
        self._request(idx)
        return out

    def _restart(self, b: int, *msg: Any) -> None:
        self.epochs[b] += 1
        self.queues[b].clear()
        _ipc.send(self.conns[b % self.workers][1], (msg[0], b, self.epochs[b], *msg[1:]))
        self._request([b] * self.depth)

    def reseed(self, b: int, seed: int) -> None:
        """Restarts env ``b``'s stream from ``seed``."""
        self._restart(b, "seed", seed)

    def switch(self, b: int, rng_state: dict[str, Any], tasks: TaskStream) -> None:
        """Env ``b``'s next episodes take their tasks from ``tasks``; its episode seeds
        continue from ``rng_state`` (the state after the episode it runs now)."""
        self._restart(b, "state", rng_state, tasks)

    def restore(self, b: int, rng_state: dict[str, Any], episode_seed: int,
                tasks: TaskStream | None = None) -> Layout:
        """The layout of ``episode_seed`` (of ``tasks.current`` under a schedule); env ``b``'s
        stream continues from ``rng_state`` (and ``tasks``)."""
        if tasks is not None:
            lay = self._cache(tasks.current).generate(episode_seed)
            lay.tasks_state, lay.task = tasks.state_dict(), tasks.current
        else:
            task = self.tasks[b]
            key = (task.level, task.env_kwargs)
            if key not in self._gens:
                self._gens[key] = LayoutGenerator(task.level, task.env_kwargs, grid_size=self.grid_size)
            lay = self._gens[key].generate(episode_seed)
        lay.rng_state = rng_state
        self._restart(b, "state", rng_state, tasks)
        return lay

    def close(self) -> None:
        """Stops the workers (also done when the source is garbage-collected)."""
        self._pool.close()
