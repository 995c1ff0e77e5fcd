import json

import pytest

from engine.catalog import CatalogError, custom_gpu, list_gpus, list_models, load_gpu, load_model, model_from_config

PAPER_MODELS = {
    "DeepSeek-R1-Distill-Llama-8B": (8.03e9, 8.03e9),
    "DeepSeek-R1-Distill-Qwen-14B": (14.77e9, 14.77e9),
    "DeepSeek-R1-Distill-Qwen-32B": (32.76e9, 32.76e9),
    "DeepSeek-R1-Distill-Llama-70B": (70.55e9, 70.55e9),
    "Llama-3.1-405B": (405.85e9, 405.85e9),
    "DeepSeek-R1": (671.0e9, 37.5e9),
}


@pytest.mark.parametrize("name", sorted(PAPER_MODELS))
def test_paper_models_params_derived_from_config(name: str) -> None:
    m = load_model(name)
    total, active = PAPER_MODELS[name]
    assert m.total_params == pytest.approx(total, rel=0.005)
    assert m.active_params == pytest.approx(active, rel=0.01)
    assert len(m.config_sha256) == 64


def test_catalog_lists_paper_models_and_aliases() -> None:
    assert set(PAPER_MODELS) <= set(list_models())
    assert load_model("32b").name == "DeepSeek-R1-Distill-Qwen-32B"
    assert load_model("r1").is_mla and load_model("r1").is_moe


def test_r1_architecture_fields() -> None:
    m = load_model("DeepSeek-R1")
    assert (m.kv_lora_rank, m.qk_rope_head_dim, m.num_experts, m.experts_per_token) == (512, 64, 256, 8)
    assert (m.num_dense_layers, m.num_moe_layers, m.checkpoint_quantization) == (3, 58, "fp8")


def test_any_config_path_and_mixtral_moe(tmp_path) -> None:
    cfg = {
        "architectures": ["MixtralForCausalLM"],
        "model_type": "mixtral",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 32000,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "max_position_embeddings": 32768,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    m = load_model(str(path))
    assert m.is_moe and m.total_params == pytest.approx(46.7e9, rel=0.01)
    assert m.active_params == pytest.approx(12.9e9, rel=0.01)
    assert load_model(str(tmp_path)).name == m.name


def test_bad_inputs_name_the_problem(tmp_path) -> None:
    with pytest.raises(CatalogError, match="nope"):
        load_model("nope")
    bad = tmp_path / "config.json"
    bad.write_text("{")
    with pytest.raises(CatalogError, match="JSON"):
        load_model(str(bad))
    with pytest.raises(CatalogError, match="hidden_size"):
        model_from_config({"num_hidden_layers": 2}, "x")
    with pytest.raises(CatalogError, match="not in the catalog"):
        load_gpu("TPU-v9")
    with pytest.raises(CatalogError, match="gpu_mem_gib"):
        custom_gpu(-1)


def test_gpu_catalog() -> None:
    names = list_gpus()
    for n in ("H100", "H200", "B200", "A100-80GB", "L40S", "MI300X", "cpu-host"):
        assert n in names
        assert load_gpu(n).source
    h200 = load_gpu("h200")
    assert h200.hbm_bytes_per_s == 4.8e12 and h200.bf16_flops == 989e12
    assert load_gpu("cpu").kind == "cpu"
    c = custom_gpu(96, base="H200")
    assert c.memory_bytes == 96 * 1024**3 and c.hbm_bytes_per_s == h200.hbm_bytes_per_s


def test_host_profile_file(tmp_path) -> None:
    f = tmp_path / "host.toml"
    f.write_text(
        '[my-host]\nkind = "cpu"\nmemory_bytes = 1000000000\nhbm_bytes_per_s = 1e10\nbf16_flops = 1e11\n'
        'link_bytes_per_s = 1e9\nsource = "measured"\n'
    )
    g = load_gpu(str(f))
    assert g.name == "my-host" and g.kind == "cpu"


def test_a_vision_tower_is_refused_and_a_non_gated_mlp_counted_as_two_matrices() -> None:
    """A multimodal config's vision tower is not sized (weights, encoder profile), so it is an error naming it, not a
    text model sized silently without it; phi's MLP is fc1 and fc2, not Llama's gate, up and down."""
    text = {"architectures": ["X"], "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "vocab_size": 100, "intermediate_size": 256}  # fmt: skip
    with pytest.raises(CatalogError, match="vision_config"):
        model_from_config({"text_config": text, "vision_config": {"hidden_size": 32}}, "mm")
    quantized = model_from_config({"text_config": text, "quantization_config": {"quant_method": "fp8"}}, "wrapped")
    assert quantized.checkpoint_quantization == "fp8"  # the wrapper's quantization applies to its text model
    phi = load_model("phi-2")
    assert phi.params.dense_mlp_per_layer == 2 * 2560 * 10240
    assert phi.total_params == pytest.approx(2.78e9, rel=0.005)


def test_without_peer_access_collectives_cross_pcie() -> None:
    """A host that hides GPU peer access (vLLM: "Custom allreduce is disabled because your platform lacks GPU P2P
    capability"): the device's collective link becomes its PCIe link (the datasheet's figure, one direction) and it no
    longer has peer access; a device whose PCIe figure the catalog lacks is refused, naming the key to add."""
    from dataclasses import replace

    from engine.catalog import resolve_device, without_peer_to_peer

    a100 = load_gpu("A100-80GB")
    host_staged = resolve_device("A100-80GB", None, peer_to_peer=False)
    assert (a100.link_bytes_per_s, host_staged.link_bytes_per_s) == (300e9, 32e9)
    assert a100.peer_to_peer and not host_staged.peer_to_peer
    assert host_staged.name == a100.name and "PCIe (32 GB/s each way)" in host_staged.source
    assert resolve_device("H100", None, peer_to_peer=False).link_bytes_per_s == 64e9
    assert without_peer_to_peer(host_staged) is host_staged  # already without
    assert resolve_device("A100-80GB") == a100  # peer access is the default
    with pytest.raises(CatalogError, match="pcie_bytes_per_s"):
        without_peer_to_peer(replace(a100, pcie_bytes_per_s=0.0))
