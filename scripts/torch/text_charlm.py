#!/usr/bin/env python3
"""joulebench's task text-charlm (models/text-charlm.toml) in PyTorch, for `joulebench exec`.

Mirrors src/engine/model/transformer.rs, a decoder-only character transformer:
  h = tok[x] + pos[0:T]                    (learned token and position tables, untied from the
                                            head; both U(-1/sqrt(d), 1/sqrt(d)))
  for each of `layers` blocks (pre-norm):
    h = h + proj(attn(ln1(h)))             qkv = Linear(d, 3d) split as [q | k | v], each d split
                                            into `heads` heads of d / heads; scores q k^T /
                                            sqrt(d / heads) plus an additive causal mask (-inf
                                            above the diagonal), softmax in f32; proj Linear(d, d)
    h = h + ff_out(gelu(ff_in(ln2(h))))    ff_in Linear(d, ff_mult d), exact (erf) GELU,
                                            ff_out Linear(ff_mult d, d)
  logits = head(ln_f(h))                   head Linear(d, vocab) with bias
LayerNorm eps 1e-5 with a trainable weight (init 1) and bias (init 0); every Linear's weight
and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)); no dropout. text-charlm: context 64, d 64, 4 heads,
2 layers, ff_mult 4, vocabulary the distinct characters of data/text/austen.txt. The loss is the
mean cross-entropy over every position of the batch; the metric the top-1 next-character accuracy
over every position of the first `eval_max_samples` (512) held-out windows. Data windows, AdamW,
batch order, warm-up, eval cadence, budget, stop rule, precision and the MLLOG output are
jbtorch.py's (its docstring says what each mirrors in joulebench and how).

Also runs text-charlm-p1 and text-charlm-p2 (the same model trained on half of the training
text, a `[data] text_part` view): `text_charlm.py --task-file models/text-charlm-p1.toml`.

Known differences from joulebench's candle run: the initial weights and the batch order come from
PyTorch's generators, not joulebench's ChaCha8 streams (same distributions, different numbers);
kernels sum in another order. Under bf16-amp the attention scores are scaled in bf16 and then
softmaxed in f32, as joulebench's Cast does, but which other ops run in bf16 is autocast's
choice (PyTorch's op lists), not joulebench's (its own per-op-class policy in src/engine/precision.rs).

Usage: text_charlm.py --seed N [--precision f32|bf16-amp|tf32] [--device cpu|cuda] [--threads N]
       [--task NAME | --task-file PATH] [--data-dir PATH] [--full-budget] [--max-steps N]
Exit status: 0 on completion (target reached or not), 2 on bad input, 143 on SIGTERM (after
printing run_stop with status "aborted" when run_start was printed).
"""

import math
import sys

import jbtorch


def build(spec, info, torch):
    nn = torch.nn
    F = torch.nn.functional
    m = spec["model"]
    try:
        ctx, d, heads, n_layers, ff = (int(m[k]) for k in
                                        ("context", "d_model", "heads", "layers", "ff_mult"))
    except (KeyError, TypeError, ValueError):
        raise jbtorch.BadInput("task file: a char-transformer needs 'model.context', "
                               "'model.d_model', 'model.heads', 'model.layers', 'model.ff_mult'")
    if min(ctx, d, heads, ff) < 1 or n_layers < 0 or d % heads:
        raise jbtorch.BadInput(f"task file: key 'model.heads' ({heads}) must divide "
                               f"'model.d_model' ({d})")
    vocab = info["vocab"]

    def linear(fi, fo):
        lin = nn.Linear(fi, fo)
        with torch.no_grad():
            jbtorch.uniform_(lin.weight, fi)
            jbtorch.uniform_(lin.bias, fi)
        return lin

    def layer_norm():
        return nn.LayerNorm(d, eps=1e-5)  # weight 1, bias 0, trainable

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            # Creation order as joulebench's: ln1, qkv, proj, ln2, ff_in, ff_out.
            self.ln1 = layer_norm()
            self.qkv = linear(d, 3 * d)
            self.proj = linear(d, d)
            self.ln2 = layer_norm()
            self.ff_in = linear(d, ff * d)
            self.ff_out = linear(ff * d, d)

        def attention(self, x, mask):
            b, t, _ = x.shape
            hd = d // heads
            qkv = self.qkv(x).reshape(b, t, 3, heads, hd)
            q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # (b, heads, t, hd)
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
            att = torch.softmax(att.float() + mask[:t, :t], dim=-1)  # f32, as joulebench
            y = (att @ v).transpose(1, 2).reshape(b, t, d)
            return self.proj(y).float()

        def forward(self, h, mask):
            h = h + self.attention(self.ln1(h), mask)
            h = h + self.ff_out(F.gelu(self.ff_in(self.ln2(h)))).float()
            return h

    class CharTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(vocab, d)
            self.pos = nn.Parameter(torch.empty(ctx, d))
            with torch.no_grad():
                jbtorch.uniform_(self.tok.weight, d)
                jbtorch.uniform_(self.pos, d)
            self.blocks = nn.ModuleList(Block() for _ in range(n_layers))
            self.ln_f = layer_norm()
            self.head = linear(d, vocab)
            mask = torch.full((ctx, ctx), float("-inf")).triu(1)  # 0 on/below the diagonal
            self.register_buffer("mask", mask, persistent=False)

        def forward(self, x):
            t = x.shape[1]
            h = self.tok(x) + self.pos[:t]
            for blk in self.blocks:
                h = blk(h, self.mask)
            return self.head(self.ln_f(h))

    return CharTransformer()


if __name__ == "__main__":
    sys.exit(jbtorch.main("text-charlm", "char-transformer", "text", build))
