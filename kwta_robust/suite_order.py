"""The order of attack rows or columns over several records: each record's cascade kept in its suite order.

:func:`suite_order` merges the records' attack sequences. It was a loop that rebuilt every sequence per item chosen
(quadratic in the attacks at a threat point, times the records); it is now one pass with heaps, choosing the same
item at every step.
"""

from __future__ import annotations

import heapq
from collections import Counter
from typing import Any, Hashable, Sequence


def suite_order(sequences: Sequence[Sequence[Any]]) -> list[Any]:
    """Every item of ``sequences`` once, in an order that keeps each sequence's own order where one exists (the
    first-seen order whenever that one does): the rows or columns of attacks over several records, each record's
    cascade in its suite order. Before, the first-seen order put a second record's ``+fgsm`` below ``+bpda`` when
    the first record had no FGSM, though that record ran FGSM first: the ``+`` (after every attack above) was false.
    Where the suites disagree (one runs A before B, another B before A) no order fits; the first-seen item goes.

    At each step the item chosen is, in first-seen order, the first head of a sequence (its first item not yet
    placed) that is no other sequence's later item, else the first head; it is then dropped from every sequence.
    Items must be hashable (labels, ``(label, norm, eps, cumulative)`` tuples)."""
    seqs = [list(dict.fromkeys(seq)) for seq in sequences]
    rank = {item: i for i, item in enumerate(dict.fromkeys(item for seq in seqs for item in seq))}
    items = list(rank)
    where: dict[Hashable, list[tuple[int, int]]] = {}  # item -> (sequence, position) of each occurrence
    later: Counter = Counter()  # item -> sequences holding it after their head
    heads: list[int] = []  # ranks of sequence heads (a heap; placed items skipped when met)
    free: list[int] = []  # ranks of heads that are no sequence's later item (a heap, likewise)
    for s, seq in enumerate(seqs):
        for p, item in enumerate(seq):
            where.setdefault(item, []).append((s, p))
            later[item] += p > 0
    heads_at = [0] * len(seqs)  # position of each sequence's head
    for seq in seqs:
        if seq:
            heapq.heappush(heads, rank[seq[0]])
            if later[seq[0]] == 0:
                heapq.heappush(free, rank[seq[0]])
    placed: set[int] = set()
    order: list[Any] = []
    while len(order) < len(items):
        for heap in (free, heads):
            while heap and heap[0] in placed:
                heapq.heappop(heap)
        chosen = free[0] if free else heads[0]
        item = items[chosen]
        placed.add(chosen)
        order.append(item)
        for s, p in where[item]:
            if p != heads_at[s]:
                continue  # dropped from the middle: the head stays
            seq = seqs[s]
            while p < len(seq) and rank[seq[p]] in placed:
                p += 1
            heads_at[s] = p
            if p < len(seq):
                head = seq[p]
                later[head] -= 1
                heapq.heappush(heads, rank[head])
                if later[head] == 0:
                    heapq.heappush(free, rank[head])
    return order
