"""engine.sim.rules: the block and token arithmetic both decode-window loops call, on cases worked out by hand."""

from engine.sim import rules


def test_blocks_held_and_full_ones() -> None:
    """25 computed tokens at 4 a block fill 6 blocks and start a 7th (partial: no hash, to the free queue's front)."""
    assert rules.held_blocks(25, 4) == (7, 6)
    assert rules.held_blocks(24, 4) == (6, 6)
    assert rules.held_blocks(0, 4) == (0, 0)
    assert rules.cdiv(25, 4) == 7


def test_a_decoder_crosses_into_a_new_block_when_its_computed_tokens_fill_theirs() -> None:
    """Offset 4 (4 computed before step 0): it computes token 5 in step 1, 9 in step 5 (4, 8 computed: full)."""
    assert rules.crossing_phase(4, 4) == 1
    assert rules.crossing_phase(0, 4) == 1  # computes token 1 in step 1: its first block
    assert rules.crossing_phase(6, 16) == 11  # 16 computed before step 10 + 1
    assert [rules.crossing_phase(o, 4) for o in range(8)] == [1, 0, 3, 2, 1, 0, 3, 2]


def test_admission_caps_the_hit_chunks_to_the_budget_and_gates_on_the_whole_sequence() -> None:
    # A fresh 100-token request, budget 64, block size 16, 10 free: 64 scheduled in 4 blocks (all 7 fit).
    assert rules.admission(100, 0, 64, 16, 10) == (0, 64, 4)
    # 7 blocks for its 100 tokens are needed free, not just the first chunk's 4: with 6 free it waits.
    assert rules.admission(100, 0, 64, 16, 6) == (0, 0, 0)
    assert not rules.full_sequence_fits(100, 16, 6) and rules.full_sequence_fits(100, 16, 7)
    # A preempted one with 7 cached blocks and 112 tokens: at most 111 tokens hit, in whole blocks (6).
    assert rules.admission(112, 7, 512, 16, 7) == (6, 16, 7)
    # Its hit cut to 3 blocks by evictions: 64 tokens left, chunked to a budget of 40.
    assert rules.admission(112, 3, 40, 16, 7) == (3, 40, 6)
    assert rules.admission(112, 3, 0, 16, 7) == (0, 0, 0)  # no budget left


def test_the_waiting_pass_admits_nobody_after_a_preemption_and_stops_at_max_num_seqs_or_the_budget() -> None:
    # 60 running of max_num_seqs 64, 500 tokens of budget left: 4 sequence slots.
    assert rules.waiting_pass_slots(0, 500, 60, 64) == 4
    # A step whose running pass preempted anybody admits nobody, whatever is left.
    assert rules.waiting_pass_slots(1, 500, 10, 64) == 0
    # Each admission takes at least one token: 3 tokens left allow at most 3, and none when the budget is spent.
    assert rules.waiting_pass_slots(0, 3, 10, 64) == 3
    assert rules.waiting_pass_slots(0, 0, 10, 64) == 0
    # max_num_seqs reached (or passed: never by vLLM, but never a negative count here).
    assert rules.waiting_pass_slots(0, 500, 64, 64) == 0
    assert rules.waiting_pass_slots(0, 500, 70, 64) == 0


def test_prefilling_tail_takes_the_budget_left_and_the_blocks_it_fills() -> None:
    assert rules.prefill_chunk(1000, 100, 512, 16) == (512, 39 - 7)
    assert rules.prefill_chunk(1000, 900, 512, 16) == (100, 63 - 57)
    assert rules.prefill_pairs(4, 10) == 4 * (10 + 2)  # each of 4 new tokens sees 10 cached + those before it
    assert rules.prefill_pairs(3, 0) == 4.5


def test_decodes_run_until_their_new_blocks_outgrow_the_free_ones() -> None:
    """Block size 4, two decoders crossing in steps ≡ 1 (steps 1, 5, 9 …), 3 free blocks: steps 1-4 take 2, step 5
    would need 2 more; with 5 free, step 9 would."""
    crossing = [0, 2, 0, 0]
    assert rules.decode_run_end(crossing, 0, 100, 3, 2, 4) == (4, 2)
    assert rules.decode_run_end(crossing, 0, 100, 5, 2, 4) == (8, 4)
    assert rules.decode_run_end(crossing, 0, 3, 3, 2, 4) == (3, 2)  # the horizon (a completion) comes first
    assert rules.decode_run_end(crossing, 4, 100, 1, 2, 4) == (4, 0)  # step 5 does not fit at all
    # Whole cycles skipped: 1,000 free blocks last 499 cycles of 4 steps, then the walk finds the 500th's end.
    assert rules.decode_run_end(crossing, 0, 10_000, 1000, 2, 4) == (2000, 1000)


def test_a_lone_last_prompt_token_is_priced_as_a_decode() -> None:
    """A prefilling request with one token left computes it as a decode would (the reference cannot tell them apart):
    one token reading its computed ones, no prompt token; any other chunk is prompt work."""
    assert rules.prefill_work(1, 99, 100) == (1, 100.0, 0)
    assert rules.prefill_work(1, 98, 100) == (1, 98.5, 1)  # one token of two left: still prompt work
    assert rules.prefill_work(64, 0, 100) == (64, 64 * 32, 64)
    assert rules.still_prefilling(100, 98) and not rules.still_prefilling(100, 99)


def test_preemption_walks_from_the_tail_until_the_step_fits() -> None:
    """Running requests hold 5, 3 and 2 blocks; each needs one new block this step. With 1 free the step is 2 short:
    the tail (2 held + its own 1) covers it; with none free (3 short) it still does; 4 short takes two."""
    taken: list[int] = []

    def preempt_tail(gives: list[int]) -> int:
        if not gives:
            return -1
        taken.append(len(gives) - 1)
        return gives.pop()

    def walk(shortfall: int) -> int:
        taken.clear()
        return rules.preempt_from_tail([5 + 1, 3 + 1, 2 + 1], shortfall, preempt_tail)

    assert walk(0) == 0 and taken == []  # the step fits: nobody is preempted
    assert walk(2) == 1 and taken == [2]  # the most recently admitted first
    assert walk(3) == 1
    assert walk(4) == 2 and taken == [2, 1]
    # A step short of more than everybody holds preempts everybody, the head last (it fails and preempts itself).
    assert walk(100) == 3 and taken == [2, 1, 0]
