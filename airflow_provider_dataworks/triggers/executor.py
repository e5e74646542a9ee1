"""The thread pool that runs blocking Kafka and OpenAPI calls for triggers, off the event loop."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

# Not asgiref's default sync_to_async: that one runs every call of the process on one shared
# thread, so a Kafka poll would queue behind (and delay) every other provider's calls.
_EXECUTOR = ThreadPoolExecutor(max_workers=32, thread_name_prefix="dataworks-blocking")


async def run_blocking(function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run a blocking Kafka or SDK call on the provider's own thread pool and await its result."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_EXECUTOR, functools.partial(function, *args, **kwargs))


def submit_blocking(function: Callable[[], object]) -> None:
    """Run a blocking call on the provider's pool without waiting for it (closing, from callbacks)."""
    _EXECUTOR.submit(function)
