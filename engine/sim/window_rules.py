"""The decode window's scheduler rules that both of its loops apply, written once.

``engine.sim.window`` (the Python loop) calls these functions as they are; ``engine.window_kernel`` (the same loop
compiled by numba) compiles these very function objects (``numba.njit(f)``) and calls the compiled versions. They
therefore take and return plain numbers and one indexable (a list in the Python loop, an array in the kernel), and
call nothing but each other's compiled twins' names through the module (see ``engine.window_kernel`` on how the
kernel binds them). This module imports neither numba nor NumPy: the Python loop must not pay numba's import.
"""

from __future__ import annotations

from collections.abc import MutableSequence


def decode_run_end(
    crossing: MutableSequence[int], step: int, horizon: int, free: int, decoding: int, block_size: int
) -> tuple[int, int]:
    """The last step up to ``horizon`` to which every decoder's blocks fit in ``free`` blocks, from ``step`` (the
    last step taken), and the blocks the steps after ``step`` up to it allocate. ``crossing[phase]``: decoders that
    need a new block in steps ≡ phase (mod block_size) (their computed tokens cross a block boundary there). Over
    any block_size consecutive steps each decoder crosses once, so whole cycles that surely fit are skipped and at
    most two walked step by step."""
    run_end = step
    blocks = 0
    if horizon - step > 2 * block_size and free >= 2 * decoding:
        cycles = min(free // decoding - 1, (horizon - step) // block_size - 1)
        run_end += cycles * block_size
        blocks = cycles * decoding
    while run_end < horizon:
        more = blocks + crossing[(run_end + 1) % block_size]
        if more > free:
            break
        blocks = more
        run_end += 1
    return run_end, blocks
