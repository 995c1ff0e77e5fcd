"""The decode window's event loop (``engine.simulate._decode_window``) compiled with numba.

The same rules, step for step, on int64 arrays instead of Python lists, dicts and a deque: the free queue's segments
are two arrays (owner, blocks) read from ``head`` and appended at ``tail``, ``seg_of[request]`` is the request's
segment in them (−1: none), the completion heap holds (step << 32 | position) keys, and generated tokens of requests
preempted in the window are written straight to ``gen_g`` (the Python loop keeps them aside and writes them at the
end; nothing reads them in between but the admissions, which read the same value either way). Tail preemption pops
a stack of the positions in order instead of walking down from the tail past every dead one (the same positions in
the same order: above the last one popped, every position is preempted or finished, until admissions append more).

Importing this module imports numba (~0.7 s); ``engine.window_jit`` decides when that happens.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_I64 = np.int64


@njit(cache=True)
def _grow(a: np.ndarray) -> np.ndarray:
    b = np.empty(2 * a.shape[0] + 16, a.dtype)
    b[: a.shape[0]] = a
    return b


@njit(cache=True)
def _fifo_push(
    fifo_o: np.ndarray, fifo_b: np.ndarray, f_tail: int, owner: int, blocks: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Append a free-queue segment (owner −1: blocks no request can reclaim); returns the arrays and the new tail."""
    if f_tail == fifo_o.shape[0]:
        fifo_o = _grow(fifo_o)
        fifo_b = _grow(fifo_b)
    fifo_o[f_tail] = owner
    fifo_b[f_tail] = blocks
    return fifo_o, fifo_b, f_tail + 1


@njit(cache=True)
def _fifo_evict(fifo_o: np.ndarray, fifo_b: np.ndarray, f_head: int, seg_of: np.ndarray, k: int) -> int:
    """Evict ``k`` blocks (allocations not yet applied) from the queue's front; returns the new head."""
    while k > 0:
        b = fifo_b[f_head]
        if b > k:
            fifo_b[f_head] = b - k
            break
        k -= b
        fifo_b[f_head] = 0
        o = fifo_o[f_head]
        f_head += 1
        if o >= 0:
            seg_of[o] = -1
    return f_head


@njit(cache=True)
def _fifo_prepend_unhashed(
    fifo_o: np.ndarray, fifo_b: np.ndarray, f_head: int, f_tail: int, seg_of: np.ndarray, blocks: int
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Blocks without a hash (partial last blocks) at the queue's front, as ``_FreePool.prepend_unhashed``: merged
    into an anonymous front segment, else a segment before it (the arrays shift right, with room to spare, when
    the head is at 0). Evict the pending allocations first. Returns the arrays, head and tail."""
    if f_head < f_tail and fifo_o[f_head] < 0:
        fifo_b[f_head] += blocks
        return fifo_o, fifo_b, f_head, f_tail
    if f_head == 0:
        shift = fifo_o.shape[0] + 16
        new_o = np.empty(fifo_o.shape[0] + shift, fifo_o.dtype)
        new_b = np.empty(fifo_b.shape[0] + shift, fifo_b.dtype)
        new_o[shift : shift + f_tail] = fifo_o[:f_tail]
        new_b[shift : shift + f_tail] = fifo_b[:f_tail]
        for idx in range(f_tail):
            o = fifo_o[idx]
            if o >= 0 and seg_of[o] == idx:
                seg_of[o] = idx + shift
        fifo_o, fifo_b = new_o, new_b
        f_head += shift
        f_tail += shift
    f_head -= 1
    fifo_o[f_head] = -1
    fifo_b[f_head] = blocks
    return fifo_o, fifo_b, f_head, f_tail


@njit(cache=True)
def _heap_push(h: np.ndarray, n: int, key: int) -> tuple[np.ndarray, int]:
    if n == h.shape[0]:
        h = _grow(h)
    i = n
    h[i] = key
    while i > 0:
        p = (i - 1) >> 1
        if h[p] <= h[i]:
            break
        h[p], h[i] = h[i], h[p]
        i = p
    return h, n + 1


@njit(cache=True)
def _heap_pop(h: np.ndarray, n: int) -> int:
    n -= 1
    last = h[n]
    if n > 0:
        i = 0
        while True:
            c = 2 * i + 1
            if c >= n:
                break
            if c + 1 < n and h[c + 1] < h[c]:
                c += 1
            if h[c] >= last:
                break
            h[i] = h[c]
            i = c
        h[i] = last
    return n


@njit(cache=True)
def window_loop(
    free: int,
    caching: bool,
    fifo_o: np.ndarray,
    fifo_b: np.ndarray,
    f_head: int,
    f_tail: int,
    seg_of: np.ndarray,
    rid0: np.ndarray,
    comp0: np.ndarray,
    gen0: np.ndarray,
    waiting: np.ndarray,
    isl: np.ndarray,
    osl: np.ndarray,
    gen_g: np.ndarray,
    bs: int,
    budget: int,
    max_num_seqs: int,
    arrivals_pending: bool,
    max_steps: int,
):  # type: ignore[no-untyped-def]
    """Mirror of the loop in ``engine.simulate._decode_window`` (read that one for the rules); returns the window's
    raw records (see ``engine.simulate._decode_window_compiled``)."""
    m = rid0.shape[0]
    cap = 2 * m + 64
    rid = np.empty(cap, _I64)
    cadj = np.empty(cap, _I64)
    gadj = np.empty(cap, _I64)
    kind = np.zeros(cap, _I64)
    at = np.zeros(cap, _I64)
    rid[:m] = rid0
    cadj[:m] = comp0
    gadj[:m] = gen0
    npos = m
    p_pos = -1
    p_rid = 0
    p_comp = 0
    p_ntok = 0
    p_held = 0
    p_gen = 0
    if m > 0 and isl[rid[m - 1]] + gadj[m - 1] - cadj[m - 1] > 1:
        p_pos = m - 1
        p_rid = rid[m - 1]
        p_comp = cadj[m - 1]
        p_gen = gadj[m - 1]
        p_ntok = isl[p_rid] + p_gen
        p_held = -(-p_comp // bs)
    alive = m if p_pos < 0 else m - 1
    cross = np.zeros(bs, _I64)
    heap = np.empty(alive + 64, _I64)
    nheap = 0
    sum_c = 0
    for i in range(alive):
        cross[(1 - cadj[i]) % bs] += 1
        heap, nheap = _heap_push(heap, nheap, ((osl[rid[i]] - gadj[i]) << 32) | i)
        sum_c += cadj[i]
    live = np.empty(cap, _I64)  # positions not yet passed by tail preemption, in order (dead ones skipped lazily)
    live[:m] = np.arange(m)
    n_live = m
    jcur = 0
    segs = np.empty(3 * 256, _I64)
    n_segs = 0
    extra = np.empty(7 * 256, np.float64)
    n_extra = 0
    events = np.empty(5 * 256, _I64)
    n_ev = 0
    adm_step = np.empty(256, _I64)
    n_adm_step = 0
    partial_pos = np.empty(16, _I64)
    n_partial = 0
    prefilled = np.empty(64, _I64)
    n_pref = 0
    front = np.empty(256, _I64)
    n_front = 0
    wptr = 0
    n_wait0 = waiting.shape[0]
    preempted = 0
    pend = 0
    head_need = -1
    stop_after_event = False
    running_now = 0
    x_tok = 0
    x_pairs = 0.0
    x_kv = 0
    x_seqs = 0
    x_samp = 0
    x_prompt = 0

    while jcur < max_steps:
        if stop_after_event:
            break
        j = jcur + 1
        left = 0
        done_now = 0
        done_partial = 0
        x_on = False
        had_prefill = p_pos >= 0
        tail_need = -1  # >= 0: step j preempts from the tail until its decodes fit (after the branches)
        if n_segs + 3 > segs.shape[0]:
            segs = _grow(segs)
        if had_prefill:
            need_d = cross[j % bs]
            chunk = p_ntok - p_comp
            if chunk > budget - alive:
                chunk = budget - alive
            need_p = -(-(p_comp + chunk) // bs) - p_held
            if need_d + need_p <= free:
                segs[n_segs] = alive
                segs[n_segs + 1] = sum_c
                segs[n_segs + 2] = 1
                n_segs += 3
                free -= need_d + need_p
                pend += need_d + need_p
                running_now = alive + 1
                if chunk == 1 and p_ntok - p_comp == 1:
                    x_on = True
                    x_tok = 1
                    x_pairs = float(p_comp + 1)
                    x_kv = p_comp
                    x_seqs = 1
                    x_samp = 0
                    x_prompt = 0
                else:
                    x_on = True
                    x_tok = chunk
                    x_pairs = chunk * (p_comp + chunk / 2)
                    x_kv = p_comp
                    x_seqs = 1
                    x_samp = 0
                    x_prompt = chunk
                p_comp += chunk
                p_held += need_p
                left = budget - alive - chunk
                if p_comp == p_ntok:
                    x_samp = 1
                    if n_pref + 2 > prefilled.shape[0]:
                        prefilled = _grow(prefilled)
                    prefilled[n_pref] = p_rid
                    prefilled[n_pref + 1] = j
                    n_pref += 2
                    g_after = p_gen + 1
                    cadj[p_pos] = p_ntok - j
                    gadj[p_pos] = g_after - j
                    if g_after >= osl[p_rid]:
                        kind[p_pos] = 2
                        at[p_pos] = j
                        done_now = p_held
                        done_partial = p_held - p_ntok // bs
                    else:
                        cross[(1 - p_ntok + j) % bs] += 1
                        alive += 1
                        sum_c += p_ntok - j
                        heap, nheap = _heap_push(heap, nheap, ((j + osl[p_rid] - g_after) << 32) | p_pos)
                    p_pos = -1
            else:
                free += p_held
                if caching:  # full blocks hittable at the back, a partial last block to the front
                    full = p_comp // bs
                    if p_held > full:
                        f_head = _fifo_evict(fifo_o, fifo_b, f_head, seg_of, pend)
                        pend = 0
                        fifo_o, fifo_b, f_head, f_tail = _fifo_prepend_unhashed(
                            fifo_o, fifo_b, f_head, f_tail, seg_of, p_held - full
                        )
                    if full > 0:
                        seg_of[p_rid] = f_tail
                        fifo_o, fifo_b, f_tail = _fifo_push(fifo_o, fifo_b, f_tail, p_rid, full)
                kind[p_pos] = 1
                at[p_pos] = j
                gen_g[p_rid] = p_gen
                if n_front == front.shape[0]:
                    front = _grow(front)
                front[n_front] = p_rid
                n_front += 1
                head_need = -(-p_ntok // bs)
                preempted += 1
                p_pos = -1
                tail_need = need_d
        else:
            need1 = cross[j % bs]
            admit = False
            if need1 <= free and alive < max_num_seqs and budget > alive and (n_front > 0 or wptr < n_wait0):
                if head_need < 0:
                    r = front[n_front - 1] if n_front > 0 else waiting[wptr]
                    head_need = -(-(isl[r] + gen_g[r]) // bs)
                admit = free - need1 >= head_need  # the head's whole sequence must fit (full_sequence_fits)
            if admit:
                if arrivals_pending:
                    break
                segs[n_segs] = alive
                segs[n_segs + 1] = sum_c
                segs[n_segs + 2] = 1
                n_segs += 3
                free -= need1
                pend += need1
                running_now = alive
                left = budget - alive
            else:
                if alive == 0:
                    break
                while kind[heap[0] & 0xFFFFFFFF] != 0:
                    nheap = _heap_pop(heap, nheap)
                j_fin = heap[0] >> 32
                horizon = j_fin if j_fin < max_steps else max_steps
                jj = jcur
                acc = 0
                if horizon - jcur > 2 * bs and free >= 2 * alive:
                    cycles = min(free // alive - 1, (horizon - jcur) // bs - 1)
                    jj += cycles * bs
                    acc = cycles * alive
                while jj < horizon:
                    nxt = acc + cross[(jj + 1) % bs]
                    if nxt > free:
                        break
                    acc = nxt
                    jj += 1
                if jj > jcur:
                    segs[n_segs] = alive
                    segs[n_segs + 1] = sum_c
                    segs[n_segs + 2] = jj - jcur
                    n_segs += 3
                    if n_segs + 3 > segs.shape[0]:
                        segs = _grow(segs)
                    free -= acc
                    pend += acc
                    if jj - jcur > 1:
                        if n_ev + 5 > events.shape[0]:
                            events = _grow(events)
                        events[n_ev] = jj
                        events[n_ev + 1] = alive
                        events[n_ev + 2] = n_front + n_wait0 - wptr
                        events[n_ev + 3] = preempted
                        events[n_ev + 4] = free
                        n_ev += 5
                    jcur = jj
                stop_after_event = arrivals_pending
                if jj == horizon:
                    if horizon < j_fin:
                        break
                    j = jj
                else:
                    j = jj + 1
                    tail_need = cross[j % bs]
        if tail_need >= 0:
            while tail_need > free and n_live > 0:
                n_live -= 1
                i = live[n_live]
                if kind[i] != 0:
                    continue
                ci = cadj[i]
                r = rid[i]
                h = -(-(ci + jcur) // bs)
                free += h
                if caching:
                    full = (ci + jcur) // bs
                    if h > full:
                        f_head = _fifo_evict(fifo_o, fifo_b, f_head, seg_of, pend)
                        pend = 0
                        fifo_o, fifo_b, f_head, f_tail = _fifo_prepend_unhashed(
                            fifo_o, fifo_b, f_head, f_tail, seg_of, h - full
                        )
                    if full > 0:
                        seg_of[r] = f_tail
                        fifo_o, fifo_b, f_tail = _fifo_push(fifo_o, fifo_b, f_tail, r, full)
                ph = (1 - ci) % bs
                if ph == j % bs:
                    tail_need -= 1
                cross[ph] -= 1
                alive -= 1
                sum_c -= ci
                kind[i] = 1
                at[i] = j
                gen_g[r] = gadj[i] + jcur
                if n_front == front.shape[0]:
                    front = _grow(front)
                front[n_front] = r
                n_front += 1
                head_need = -(-(ci + jcur + 1) // bs)
                preempted += 1
            segs[n_segs] = alive
            segs[n_segs + 1] = sum_c
            segs[n_segs + 2] = 1
            n_segs += 3
            free -= tail_need
            pend += tail_need
        # ---- admissions from the head of the waiting queue (preempted requests first, most recent first).
        partial = False
        if left > 0:
            if not x_on:
                x_on = True
                x_tok = 0
                x_pairs = 0.0
                x_kv = 0
                x_seqs = 0
                x_samp = 0
                x_prompt = 0
            n_adm = 0
            while (n_front > 0 or wptr < n_wait0) and left > 0 and running_now + n_adm < max_num_seqs:
                r = front[n_front - 1] if n_front > 0 else waiting[wptr]
                g = gen_g[r]
                ntok = isl[r] + g
                hit = 0
                si = seg_of[r]
                if si >= 0:
                    if pend:  # evict the allocations so far from the queue's front first
                        f_head = _fifo_evict(fifo_o, fifo_b, f_head, seg_of, pend)
                        pend = 0
                        si = seg_of[r]
                    if si >= 0:
                        hit = min(fifo_b[si], (ntok - 1) // bs)
                hit_tokens = hit * bs
                chunk = ntok - hit_tokens
                if chunk > left:
                    chunk = left
                if -(-ntok // bs) > free:  # engine.simulate.full_sequence_fits: vLLM's scheduler_reserve_full_isl
                    break
                total = -(-(hit_tokens + chunk) // bs)
                if n_front > 0:
                    n_front -= 1
                else:
                    wptr += 1
                head_need = -1
                if si >= 0:
                    seg_of[r] = -1
                    free -= hit
                    fifo_b[si] -= hit
                    fifo_o[si] = -1
                free -= total - hit
                pend += total - hit
                x_tok += chunk
                x_pairs += chunk * (hit_tokens + chunk / 2)
                x_kv += hit_tokens
                x_seqs += 1
                x_prompt += chunk
                left -= chunk
                n_adm += 1
                pos = npos
                if npos == rid.shape[0]:
                    rid = _grow(rid)
                    cadj = _grow(cadj)
                    gadj = _grow(gadj)
                    kind = _grow(kind)
                    at = _grow(at)
                    live = _grow(live)
                npos += 1
                live[n_live] = pos
                n_live += 1
                rid[pos] = r
                kind[pos] = 0
                at[pos] = 0
                if n_adm_step == adm_step.shape[0]:
                    adm_step = _grow(adm_step)
                adm_step[n_adm_step] = j
                n_adm_step += 1
                if chunk < ntok - hit_tokens:
                    p_pos = pos
                    p_rid = r
                    p_comp = hit_tokens + chunk
                    p_ntok = ntok
                    p_held = total
                    p_gen = g
                    cadj[pos] = 0
                    gadj[pos] = 0
                    if n_partial == partial_pos.shape[0]:
                        partial_pos = _grow(partial_pos)
                    partial_pos[n_partial] = pos
                    n_partial += 1
                    partial = True
                    break
                x_samp += 1
                g += 1
                cadj[pos] = ntok - j
                gadj[pos] = g - j
                if g >= osl[r]:
                    kind[pos] = 2
                    at[pos] = j
                    done_now += total
                    done_partial += total - ntok // bs
                    continue
                cross[(1 - ntok + j) % bs] += 1
                alive += 1
                sum_c += ntok - j
                heap, nheap = _heap_push(heap, nheap, ((j + osl[r] - g) << 32) | pos)
        if x_on:
            if n_extra + 7 > extra.shape[0]:
                extra = _grow(extra)
            extra[n_extra] = j
            extra[n_extra + 1] = x_tok
            extra[n_extra + 2] = x_pairs
            extra[n_extra + 3] = x_kv
            extra[n_extra + 4] = x_seqs
            extra[n_extra + 5] = x_samp
            extra[n_extra + 6] = x_prompt
            n_extra += 7
        freed = done_now
        freed_partial = done_partial
        while nheap > 0 and (heap[0] >> 32) <= j:
            i = heap[0] & 0xFFFFFFFF
            nheap = _heap_pop(heap, nheap)
            if kind[i] != 0:
                continue
            kind[i] = 2
            at[i] = j
            ci = cadj[i]
            cross[(1 - ci) % bs] -= 1
            alive -= 1
            sum_c -= ci
            freed += -(-(ci + j) // bs)
            if (ci + j) % bs:
                freed_partial += 1
        if freed:
            free += freed
            if caching:  # all anonymous: full blocks to the back, partial last blocks to the front
                if freed_partial:
                    f_head = _fifo_evict(fifo_o, fifo_b, f_head, seg_of, pend)
                    pend = 0
                    fifo_o, fifo_b, f_head, f_tail = _fifo_prepend_unhashed(
                        fifo_o, fifo_b, f_head, f_tail, seg_of, freed_partial
                    )
                freed -= freed_partial
                if freed:
                    if f_tail > f_head and fifo_o[f_tail - 1] < 0:
                        fifo_b[f_tail - 1] += freed
                    else:
                        fifo_o, fifo_b, f_tail = _fifo_push(fifo_o, fifo_b, f_tail, -1, freed)
        jcur = j
        n_points = 2 if partial and not had_prefill else 1  # the reference records a decode run's end once more
        if n_ev + 10 > events.shape[0]:
            events = _grow(events)
        for _ in range(n_points):
            events[n_ev] = j
            events[n_ev + 1] = alive + (1 if p_pos >= 0 else 0)
            events[n_ev + 2] = n_front + n_wait0 - wptr
            events[n_ev + 3] = preempted
            events[n_ev + 4] = free
            n_ev += 5
        if not (alive or p_pos >= 0 or n_front > 0 or wptr < n_wait0):
            break
    return (
        jcur,
        free,
        pend,
        fifo_o[f_head:f_tail].copy(),
        fifo_b[f_head:f_tail].copy(),
        rid[:npos].copy(),
        cadj[:npos].copy(),
        gadj[:npos].copy(),
        kind[:npos].copy(),
        at[:npos].copy(),
        adm_step[:n_adm_step].copy(),
        partial_pos[:n_partial].copy(),
        prefilled[:n_pref].copy(),
        front[:n_front].copy(),
        wptr,
        events[:n_ev].copy(),
        segs[:n_segs].copy(),
        extra[:n_extra].copy(),
        p_pos,
        p_comp,
        p_gen,
    )


def warm_up():  # type: ignore[no-untyped-def]
    """Compile ``window_loop`` for the argument types simulate passes (or load it from the cache) by running it on
    a tiny window: two decoding requests, one waiting."""
    a = np.array
    window_loop(
        10, True, a([-1], _I64), a([10], _I64), 0, 1, np.full(3, -1, _I64), a([0, 1], _I64), a([5, 5], _I64),
        a([1, 1], _I64), a([2], _I64), a([4, 4, 4], _I64), a([3, 3, 3], _I64), np.zeros(3, _I64), 4, 64, 8,
        False, 1000,
    )  # fmt: skip
    return window_loop
