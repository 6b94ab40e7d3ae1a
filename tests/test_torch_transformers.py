"""eoi_torch.sparsify on Hugging Face ``transformers`` models built locally from configs (no download)."""

from __future__ import annotations

import pytest
import torch

import eoi_torch

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("torch_one_thread")

SMALL = dict(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4)


def gpt2():
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=64, n_positions=16,
                                     bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config), {"input_ids": torch.randint(0, 64, (2, 8))}


def llama():
    config = transformers.LlamaConfig(vocab_size=64, num_key_value_heads=2, **SMALL)
    return transformers.LlamaForCausalLM(config), {"input_ids": torch.randint(0, 64, (2, 8))}


def bert():
    config = transformers.BertConfig(vocab_size=64, **SMALL)
    return transformers.BertForMaskedLM(config), {"input_ids": torch.randint(0, 64, (2, 8))}


def vit():
    config = transformers.ViTConfig(image_size=16, patch_size=4, num_labels=3, **SMALL)
    return transformers.ViTForImageClassification(config), {"pixel_values": torch.randn(2, 3, 16, 16)}


def matrices(model: torch.nn.Module) -> int:
    return len({id(p) for p in model.parameters() if p.dim() >= 2})


@pytest.mark.parametrize("build", [gpt2, llama, bert, vit], ids=["gpt2", "llama", "bert", "vit"])
@pytest.mark.parametrize("mode", ["parametrize", "hook"])
def test_every_weight_matrix_is_listed_and_masks_hold_in_training(build, mode):
    torch.manual_seed(0)
    model, inputs = build()
    count = matrices(model)
    report = eoi_torch.sparsify(model, 0.1, mode=mode)
    assert len(report) == count  # every weight matrix, sparsified or skipped with a reason
    assert all(row.reason for row in report.skipped)
    assert abs(report.density - 0.1) < 1e-3
    assert all(row.orthogonality_error < 1e-5 for row in report.sparsified)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        output = model(**inputs)
        output.logits.float().pow(2).mean().backward()
        optimizer.step()
    for key, mask in eoi_torch.masks(model).items():
        try:
            module, parameter = model.get_submodule(key), "weight"
        except AttributeError:
            layer, _, parameter = key.rpartition(".")
            module = model.get_submodule(layer)
        assert not getattr(module, parameter).detach()[~mask].any(), key


def test_gpt2_conv1d_is_transposed_and_c_attn_is_three_blocks():
    torch.manual_seed(0)
    model, _ = gpt2()
    report = eoi_torch.sparsify(model, 0.2, verify="exact")
    c_attn = report["transformer.h.0.attn.c_attn"]
    assert c_attn.groups == 3 and c_attn.shape == (32, 96) and c_attn.orthogonality_error < 1e-6
    weight = model.transformer.h[0].attn.c_attn.weight.detach().double()  # (in, out): y = x @ W
    for block in weight.T.chunk(3):  # q, k, v: each (32, 32) orthogonal
        assert torch.allclose(block @ block.T, torch.eye(32, dtype=torch.float64), atol=1e-5)
    head = report["lm_head"]
    assert head.status == "skipped" and "transformer.wte.weight" in head.reason
    assert model.lm_head.weight is model.transformer.wte.weight
