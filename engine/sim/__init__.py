"""The cliff simulator, laid out as vLLM's scheduler is (``engine.simulate`` is its public face).

``reference`` is the specification (vLLM V1's scheduler written out plainly) and ``parity`` holds it to vLLM's real
``Scheduler`` step for step. The fast simulator: ``free_pool`` (the free-block queue and the one admission rule),
``state`` (fates, the running batch, outcomes), ``replica`` (one replica's driver), ``window`` (the decode-window
fast path), ``resolve`` (the scenario resolved once), ``predict`` and ``assemble`` (the prediction), ``config``."""
