"""The simulator's switches and its error (one module, so a test's monkeypatch reaches every reader)."""

USE_DECODE_WINDOWS = True  # False: every step through the general scheduler (the reference the tests compare)
# The decode window's event loop: "auto" (compiled once loaded, see engine.window_jit), "python" or "compiled"
# (loads, and compiles if need be, numba's kernel first; tests run both against the step-by-step reference).
WINDOW_LOOP = "auto"
MAX_STEPS = 20_000_000  # scheduler steps per replica before a run is refused as runaway
TIMELINE_ROWS = 1500


class SimulationError(ValueError):
    """A scenario that cannot be simulated (infeasible layout, a request longer than the cache holds)."""
