"""The simulator's specification: a plain scheduler in vLLM V1's own words (``reference``), and the harness that
holds it to vLLM's real ``Scheduler`` step for step (``parity``)."""
