"""Run a producer on a thread, one item ahead of its consumer.

DuckDB, the gzip decoder and Arrow release the GIL while they work, so a thread producing the next
item (a decompressed chunk, a query's next record batch) really overlaps the consumer's Python work
on the other core.

>>> list(prefetched(lambda: iter(range(5))))
[0, 1, 2, 3, 4]
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


def prefetched(produce: Callable[[], Iterator[T]], *, depth: int = 1, name: str = "distillguard-prefetch") -> Iterator[T]:
    """Yield the items of ``produce()`` in order, producing up to ``depth`` ahead on a thread.

    An exception on the thread reaches the consumer after every item before it; closing the
    generator early stops the thread.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def run() -> None:
        try:
            for item in produce():
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as e:  # handed to the consumer, raised there
            q.put(e)

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        t.join(timeout=5)
