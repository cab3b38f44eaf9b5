"""Only the rows whose next token is wanted go through the text decoder's last layer past its
attention; their final hidden states, and every row's cached keys and values, are those of the
whole computation."""

from __future__ import annotations

import pytest
import torch

from flashsight.engine.config import EngineConfig
from flashsight.engine.loader import load_checkpoint
from flashsight.engine.paged_attention import BatchAttention, DecodeRows, PagedKVCache, SeqSlice

PAGE = 16
WRITTEN = torch.cat([torch.arange(37), torch.arange(4 * PAGE, 4 * PAGE + 21)])  # the slots a step fills


def _same_cache(a: PagedKVCache, b: PagedKVCache) -> bool:
    return torch.equal(a.keys[:, WRITTEN], b.keys[:, WRITTEN]) and torch.equal(a.values[:, WRITTEN], b.values[:, WRITTEN])


@pytest.fixture(scope="module")
def ckpt(tiny_model_dir):
    return load_checkpoint(EngineConfig(model=tiny_model_dir, device="cpu", dtype="fp32"))


def _cache(ckpt) -> PagedKVCache:
    text = ckpt.config.text_config
    head_dim = text.hidden_size // text.num_attention_heads
    return PagedKVCache(text.num_hidden_layers, 16, PAGE, text.num_key_value_heads, head_dim, torch.float32, "cpu")


def _step(ckpt, cache: PagedKVCache, keep):
    """A mixed step: a 37-token prompt (pages 0-2), then a decode row whose sequence has 20
    earlier tokens in pages 4-5, computed with `keep` on the last layer."""
    torch.manual_seed(0)
    text = ckpt.config.text_config
    # The decode row's earlier keys and values, as an earlier step would have left them.
    for keys in (cache.keys, cache.values):
        keys[:, 4 * PAGE : 4 * PAGE + 20] = torch.randn(keys.shape[0], 20, *keys.shape[2:])
    ids = torch.randint(0, text.vocab_size, (38,))
    positions = torch.cat([torch.arange(37), torch.tensor([20])]).expand(3, 38)
    new_slots = torch.cat([torch.arange(37), torch.tensor([4 * PAGE + 20])])
    decode = DecodeRows(torch.tensor([37]), torch.tensor([[4, 5]], dtype=torch.int32), torch.tensor([21], dtype=torch.int32))
    ops = ckpt.model.model.language_model.ops
    attention = BatchAttention(cache, new_slots, [SeqSlice(0, 37, torch.arange(37))], decode, ops)
    x = ckpt.model.embed(ids, [])
    return ckpt.model(x, positions, attention.attend, keep)


@torch.inference_mode()
def test_kept_rows_are_those_of_the_whole_computation(ckpt):
    whole_cache, kept_cache = _cache(ckpt), _cache(ckpt)
    whole = _step(ckpt, whole_cache, None)
    keep = torch.tensor([36, 37, 5])  # the prompt's last row, the decode row, and any other row
    kept = _step(ckpt, kept_cache, keep)
    assert whole.shape[0] == 38 and kept.shape == (3, whole.shape[1])
    torch.testing.assert_close(kept, whole[keep], rtol=1e-5, atol=1e-5)
    assert _same_cache(kept_cache, whole_cache)
    assert torch.equal(ckpt.model.logits(kept[:1]).argmax(-1), ckpt.model.logits(whole[36:37]).argmax(-1))


@torch.inference_mode()
def test_no_kept_row_still_stores_every_row_s_keys(ckpt):
    """A prompt's middle chunk wants no token: the last layer only stores its keys and values."""
    whole_cache, kept_cache = _cache(ckpt), _cache(ckpt)
    _step(ckpt, whole_cache, None)
    kept = _step(ckpt, kept_cache, torch.tensor([], dtype=torch.long))
    assert kept.shape[0] == 0
    assert _same_cache(kept_cache, whole_cache)
