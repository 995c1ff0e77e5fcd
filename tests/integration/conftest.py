"""Shared fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.s3_server import S3Endpoint, start_s3_server
from tests.support.vllm_server import ServerConfig, VllmServer, start_vllm_server


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """One real vLLM CPU OpenAI API server for the whole test session (start-up ~20-30 s, paid once).

    tiny-llama-4l with dummy weights and a locally built tokenizer, a 1 MiB KV pool (512 tokens), max_num_seqs 16,
    max_model_len 256: a batch of 16+ requests of 160 tokens hits the capacity trap (preemptions) within seconds.
    Tests that need other engine flags start their own with ``tests.support.vllm_server.start_vllm_server``.
    Only tests marked ``vllm`` may use it.
    """
    with start_vllm_server(tmp_path_factory.mktemp("vllm-server"), ServerConfig()) as server:
        yield server


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """moto's S3 server on 127.0.0.1 for the session (a real S3 API over HTTP; ~2 s to start)."""
    with start_s3_server(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint
