"""A real vLLM engine's own /metrics exposition into the store.

vLLM (CPU backend) runs a small batch with a KV pool small enough to preempt; after every few engine steps the test
renders the process's Prometheus registry — the same text vLLM's ``/metrics`` endpoint serves, produced by vLLM's
own ``PrometheusStatLogger`` — and stamps each sample with the time in milliseconds, as a scraper that keeps
timestamps does. The concatenated scrapes are then imported like any user's file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.store import Store

pytestmark = pytest.mark.vllm

MODEL_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 256,
    "intermediate_size": 768,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "vocab_size": 4096,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
NUM_REQUESTS, ISL, OSL = 24, 64, 128

SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path

    def main():
        model_dir, out, kv_bytes, n, isl, osl = sys.argv[1], Path(sys.argv[2]), *map(int, sys.argv[3:])
        from prometheus_client import REGISTRY, generate_latest
        from vllm import EngineArgs, SamplingParams
        from vllm.v1.engine.llm_engine import LLMEngine

        engine = LLMEngine.from_engine_args(EngineArgs(
            model=model_dir, load_format="dummy", skip_tokenizer_init=True, dtype="bfloat16", block_size=32,
            max_model_len=512, max_num_seqs=16, kv_cache_memory_bytes=kv_bytes, enforce_eager=True,
            disable_log_stats=False, enable_prefix_caching=False))
        params = SamplingParams(max_tokens=osl, ignore_eos=True, detokenize=False)
        for i in range(n):
            engine.add_request(str(i), {"prompt_token_ids": [(7 * i + j) % 4000 + 10 for j in range(isl)]}, params)
        scrapes, step = [], 0
        def scrape():
            stamp = int(time.time() * 1000)
            for line in generate_latest(REGISTRY).decode().splitlines():
                scrapes.append(line if line.startswith("#") or not line.strip() else f"{line} {stamp}")
        scrape()
        while engine.has_unfinished_requests():
            engine.step()
            step += 1
            if step % 8 == 0:
                scrape()
        time.sleep(0.01)
        scrape()
        out.write_text("\\n".join(scrapes) + "\\n")
        engine.engine_core.shutdown()

    if __name__ == "__main__":
        main()
    """
)


def test_real_vllm_metrics_exposition(tmp_path: Path) -> None:
    model_dir = tmp_path / "tiny-llama"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(MODEL_CONFIG))
    script = tmp_path / "scrape_vllm.py"
    script.write_text(SCRIPT)
    out = tmp_path / "vllm-metrics.prom"
    kv_bytes = 2 * 1024 * 1024  # 1,024 tokens at 2 KiB/token: 16 running × (64 + 128) tokens cannot all fit
    env_cache = {"VLLM_CACHE_ROOT": str(tmp_path / "vllm-cache")}
    result = subprocess.run(
        [sys.executable, str(script), str(model_dir), str(out), str(kv_bytes), str(NUM_REQUESTS), str(ISL), str(OSL)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**__import__("os").environ, **env_cache},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    assert "vllm:kv_cache_usage_perc{" in text and "vllm:num_preemptions_total{" in text

    with Store(tmp_path / "vllm.duckdb") as store:
        (run,) = store.ingest(out).runs
        samples = store.engine_samples(run.run_id)
        assert samples.height >= 5
        assert samples["generation_tokens_total"][-1] - samples["generation_tokens_total"][0] == NUM_REQUESTS * OSL
        assert samples["prompt_tokens_total"][-1] >= NUM_REQUESTS * ISL
        assert 0 < samples["kv_usage"].max() <= 1.0
        assert samples["running"].max() <= 16
        summary = store.measured_summary(run.run_id)
        assert summary["preemptions"] > 0 and summary["cliff_onset_s"] is not None
        assert summary["num_requests"] == NUM_REQUESTS
        assert summary["ttft_mean_s"] > 0 and summary["e2e_p99_s"] >= summary["e2e_p50_s"]
        meta = store.run_meta(run.run_id)
        assert meta["block_size"] == 32 and meta["kv_blocks"] > 0
        assert meta["kv_capacity_tokens"] == 1024  # vLLM's own kv_cache_size_tokens: 2 MiB at 2 KiB per token
        assert meta["kv_cache_memory_bytes"] == kv_bytes
        assert meta["histograms"]["tpot_s"]["family"] == "vllm:request_time_per_output_token_seconds"
        assert store.ingest(out).runs[0].action == "unchanged"
