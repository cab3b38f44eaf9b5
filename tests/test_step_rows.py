"""A mixed step's rows (prompt chunks and single tokens riding along, in batch order) carry the
same token ids, M-RoPE positions and cache slots as each sequence computes for itself."""

from __future__ import annotations

import torch

from flashsight.engine.model_runner import _StepRows
from flashsight.engine.paged_attention import slots_of
from flashsight.engine.prompt import PreparedPrompt
from flashsight.engine.sampling import TokenSampler
from flashsight.engine.sequence import Sequence
from flashsight.engine.types import SamplingParams

PAGE = 4


def _sequence(prompt_len: int, generated: int, computed: int, first_block: int) -> Sequence:
    # 3-D positions that differ per axis inside the prompt, as an image's do
    positions = torch.stack([torch.arange(prompt_len), torch.arange(prompt_len) // 2, torch.arange(prompt_len) % 3])
    prompt = PreparedPrompt(list(range(10, 10 + prompt_len)), positions, prompt_len, None, [])
    params = SamplingParams(max_tokens=8)
    sampler = TokenSampler(params, prompt.token_ids, set(), torch.device("cpu"))
    seq = Sequence("r", prompt, params, sampler, text=None, max_tokens=8, stop_ids=set())  # type: ignore[arg-type]
    seq.token_ids += list(range(500, 500 + generated))
    seq.block_table = list(range(first_block, first_block + -(-len(seq.token_ids) // PAGE)))
    seq.num_computed = computed
    return seq


def test_rows_match_each_sequence_computed_alone():
    batch = [
        (_sequence(9, 3, 11, 0), 1),  # a decode
        (_sequence(13, 0, 0, 10), 13),  # a whole prompt
        (_sequence(6, 2, 7, 20), 1),  # two decodes in a row
        (_sequence(5, 4, 8, 30), 1),
        (_sequence(14, 0, 6, 40), 8),  # a prompt's second chunk
        (_sequence(7, 0, 6, 50), 1),  # a prompt's last token alone (after a cached prefix)
    ]
    rows = _StepRows(PAGE)
    for seq, count in batch:
        if count == 1:
            rows.add_token(seq)
        else:
            rows.add_chunk(seq, count, torch.empty(0))
    positions, slots = rows.tensors()
    expected_ids = sum((seq.token_ids[seq.num_computed : seq.num_computed + c] for seq, c in batch), [])
    assert rows.ids == expected_ids
    assert torch.equal(positions, torch.cat([seq.positions(seq.num_computed, c) for seq, c in batch], dim=1))
    assert torch.equal(slots, torch.cat([slots_of(seq.block_table, seq.num_computed, seq.num_computed + c, PAGE)
                                         for seq, c in batch]))  # fmt: skip
    assert rows.decode_rows == [0, 14, 15, 24] and [chunk.q_start for chunk in rows.chunks] == [1, 16]
    assert rows.last_rows == [0, 13, 14, 15, 23, 24]
