"""The sweep's progress bars: a sweep run without --quiet must not fail on its own bars."""

import io

from collectors.progress import SweepProgress


def test_sweep_and_job_bars_run_and_report() -> None:
    out = io.StringIO()
    progress = SweepProgress(2, stream=out)
    progress.start_job("cpu-iv-a-knee-seqs7")  # its bar is not kept (leave=False) while the sweep's is
    progress.job_progress(32, 64, 10.0, 0)
    progress.end_job("cpu-iv-a-knee-seqs7", "complete", "in 10.0 s, 0 preemptions")
    progress.message("done")
    progress.close()
    text = out.getvalue()
    assert "job cpu-iv-a-knee-seqs7: complete in 10.0 s, 0 preemptions" in text and "done" in text
    assert progress.jobs_done == 1
