"""`evomerge-fast`: lm-eval's HF model with a log-likelihood path that does only the work the answer needs.

lm-eval's `HFLM` runs every (context + continuation) pair as its own sequence and takes a full-vocabulary
log-softmax at every position. A multiple-choice document with four choices thus runs its question four times, and
projects every question token onto the vocabulary although only the continuation tokens are scored. `FastLM`:

- lays the requests out as prefix trees (a context and all its continuations, and documents that start alike, share
  their common prefix), packed into rows with a tree attention mask and tree position ids, so every distinct
  prefix runs once;
- projects onto the vocabulary only the positions that predict continuation tokens;
- lays each set of requests out once (the same documents are scored for every candidate): rows, masks and index
  tensors are built on the device at the first call and reused, a few large forward passes on a GPU, and the
  results come back to the host in one copy.

Everything else (request building, tokenisation, `generate_until` with greedy decoding and a KV cache,
`loglikelihood_rolling`) is HFLM's. Tokenised requests are cached, so scoring many candidates on the same documents
tokenises once. Registered with lm-eval, so any task runs on it:

    import evomerge.fitness.fast_lm  # registers the model
    lm_eval.simple_evaluate(model="evomerge-fast", model_args="pretrained=DIR,device=cpu", tasks=[...])

tests/test_fast.py checks that its log-likelihoods equal HFLM's within 1e-4 and its accuracies exactly.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

Request = tuple[tuple[str, str], list[int], list[int]]

ROW_TOKENS = 256  # tokens per packed row: attention over a row costs ~8% of the matmuls at this length
# rows x ROW_TOKENS per forward pass: on a CPU, 1024 keeps activations in cache; a GPU wants few large forwards
TOKENS_PER_BATCH = {"cpu": 1024, "cuda": 32768, "mps": 8192}
HEAD_ROWS = 512  # vocabulary projections at a time: 512 x 49k float32 logits is 100 MB


@register_model("evomerge-fast")
class FastLM(HFLM):
    def __init__(self, *args, cache: Optional[dict] = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # tokenised pairs and laid-out request sets, shared by every model a Scorer scores
        self._cache = {} if cache is None else cache

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        key = (context, continuation)
        if key not in self._cache:
            self._cache[key] = super()._encode_pair(context, continuation)
        return self._cache[key]

    def _supported(self) -> bool:
        """Causal models whose logits are the output embedding applied to the decoder's last hidden state."""
        cfg = self.model.config
        return (self.backend == "causal" and self.model.get_output_embeddings() is not None
                and getattr(self.model, self.model.base_model_prefix, None) is not None
                and not getattr(cfg, "final_logit_softcapping", None) and getattr(cfg, "logit_scale", None) is None
                and not getattr(cfg, "tie_word_embeddings_scale", None))

    def _loglikelihood_tokens(self, requests: list[Request], disable_tqdm: bool = False,
                              override_bs: Optional[int] = None) -> list[tuple[float, bool]]:
        if not self._supported():
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        # What HFLM feeds the model for each request: (context + continuation)[-(max_length + 1):][:-1], whose last
        # len(continuation) positions predict the continuation.
        inputs, conts = [], []
        for _, ctx, cont in requests:
            window = (ctx + cont)[-(self.max_length + 1):]
            inputs.append(tuple(window[:-1]))
            conts.append(tuple(cont[-(len(window) - 1):]))
        key = ("layout", str(self.device), tuple(inputs), tuple(conts))
        if key not in self._cache:  # the same documents are scored for every candidate: lay them out once
            self._cache[key] = _Layout(inputs, conts, device=self.device, pad=self._pad_id())
        out = self._cache[key].score(self.model)
        for request, result in zip(requests, out):
            self.cache_hook.add_partial("loglikelihood", request[0], result)
        return out

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else (self.tokenizer.eos_token_id or 0)


class _Batch:
    """One forward pass's rows, as tensors on the device: token ids, tree position ids and attention mask; the
    (row, node) of every position that predicts a continuation token; and, for every continuation token of every
    request, its position (an index into those) and the token."""

    def __init__(self, rows: list["_Row"], inputs: list[tuple[int, ...]], conts: list[tuple[int, ...]], *,
                 device, pad: int) -> None:
        width = max(len(r.tokens) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        pos = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), 1, width, width), dtype=torch.bool)
        for b, row in enumerate(rows):
            n = len(row.tokens)
            ids[b, :n] = torch.tensor(row.tokens)
            pos[b, :n] = torch.tensor(row.depth)
            mask[b, 0, :n, :n] = torch.from_numpy(row.ancestors())
            mask[b, 0, range(n, width), range(n, width)] = True  # padding sees itself: no empty softmax rows
        # every (row, node) that predicts a continuation token, projected once even when several requests share it
        slots: dict[tuple[int, int], int] = {}
        self.requests: list[int] = []
        at, targets, owner = [], [], []
        for b, row in enumerate(rows):
            for i, path in row.paths.items():
                n = len(conts[i])
                for node, token in zip(path[len(inputs[i]) - n:], conts[i]):
                    at.append(slots.setdefault((b, node), len(slots)))
                    targets.append(token)
                    owner.append(len(self.requests))
                self.requests.append(i)
        keys = list(slots)
        self.ids, self.pos, self.mask = ids.to(device), pos.to(device), mask.to(device)
        self.slot_row = torch.tensor([b for b, _ in keys], device=device)
        self.slot_node = torch.tensor([n for _, n in keys], device=device)
        self.at, self.targets = torch.tensor(at, device=device), torch.tensor(targets, device=device)
        self.owner = torch.tensor(owner, device=device)


class _Layout:
    """A request set laid out once as prefix-tree rows, in batches of tensors kept on the device; `score(model)`
    runs them and copies the results to the host once."""

    def __init__(self, inputs: list[tuple[int, ...]], conts: list[tuple[int, ...]], *, device, pad: int) -> None:
        order = sorted(range(len(inputs)), key=lambda i: inputs[i])  # shared prefixes next to each other
        rows = _pack(order, inputs, ROW_TOKENS)
        per_batch = max(1, TOKENS_PER_BATCH.get(torch.device(device).type, 1024) // ROW_TOKENS)
        self.batches = [_Batch(rows[b:b + per_batch], inputs, conts, device=device, pad=pad)
                        for b in range(0, len(rows), per_batch)]
        self.size = len(inputs)

    @torch.no_grad()
    def score(self, model) -> list[tuple[float, bool]]:
        decoder = getattr(model, model.base_model_prefix)
        head = model.get_output_embeddings()
        totals, misses, order = [], [], []
        for batch in self.batches:
            hidden = decoder(input_ids=batch.ids, attention_mask=batch.mask, position_ids=batch.pos).last_hidden_state
            states = hidden[batch.slot_row, batch.slot_node]
            logprobs, greedy = [], []
            for s in range(0, len(states), HEAD_ROWS):  # the vocabulary projection only where a token is scored
                logits = F.log_softmax(head(states[s:s + HEAD_ROWS]).float(), dim=-1)
                logprobs.append(logits)
                greedy.append(logits.argmax(dim=-1))
            picked = torch.cat(logprobs)[batch.at, batch.targets]
            wrong = (torch.cat(greedy)[batch.at] != batch.targets).int()
            n = len(batch.requests)
            totals.append(torch.zeros(n, dtype=picked.dtype, device=picked.device).index_add_(0, batch.owner, picked))
            misses.append(torch.zeros(n, dtype=wrong.dtype, device=wrong.device).index_add_(0, batch.owner, wrong))
            order.extend(batch.requests)
        out: list[Optional[tuple[float, bool]]] = [None] * self.size
        for i, total, miss in zip(order, torch.cat(totals).tolist(), torch.cat(misses).tolist()):
            out[i] = (total, miss == 0)
        return out  # type: ignore[return-value]


class _Row:
    """A prefix tree of token sequences laid out as one row: node j has a token, a parent (earlier in the row) and
    a depth (its position id); a node attends to its ancestors and itself, so every path reads exactly as the
    sequence it stands for, and each shared prefix is computed once."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.parent: list[int] = []
        self.depth: list[int] = []
        self.children: dict[tuple[int, int], int] = {}
        self.paths: dict[int, list[int]] = {}

    def new_nodes(self, seq: tuple[int, ...]) -> int:
        node, shared = -1, 0
        for tok in seq:
            node = self.children.get((node, tok), -2)
            if node == -2:
                break
            shared += 1
        return len(seq) - shared

    def add(self, i: int, seq: tuple[int, ...]) -> None:
        node, path = -1, []
        for tok in seq:
            nxt = self.children.get((node, tok))
            if nxt is None:
                nxt = len(self.tokens)
                self.children[(node, tok)] = nxt
                self.tokens.append(tok)
                self.parent.append(node)
                self.depth.append(self.depth[node] + 1 if node >= 0 else 0)
            node = nxt
            path.append(node)
        self.paths[i] = path

    def ancestors(self) -> np.ndarray:
        n = len(self.tokens)
        out = np.zeros((n, n), dtype=bool)
        for j, p in enumerate(self.parent):
            if p >= 0:
                out[j] = out[p]
            out[j, j] = True
        return out


def _pack(order: list[int], inputs: list[tuple[int, ...]], budget: int) -> list[_Row]:
    """Requests (in prefix order) into rows of at most `budget` tree nodes; a longer request gets a row of its own."""
    rows = [_Row()]
    for i in order:
        if rows[-1].paths and len(rows[-1].tokens) + rows[-1].new_nodes(inputs[i]) > budget:
            rows.append(_Row())
        rows[-1].add(i, inputs[i])
    return rows
