#!/usr/bin/env python3
"""joulebench's task shakespeare-gpt (models/shakespeare-gpt.toml) in PyTorch, for joulebench exec.

Mirrors nanoGPT's model.py with bias=False, as joulebench's `[model] kind = "gpt"`:
  x = drop(wte[idx] + wpe[0:T])            token table wte (256, d) and position table
                                            wpe (context, d), both N(0, 0.02)
  for each of `layers` blocks (pre-norm):
    x = x + attn(ln_1(x))                  c_attn Linear(d, 3d, no bias) N(0, 0.02), split into
                                            q | k | v, each (B, T, heads, d / heads); causal
                                            scaled-dot-product softmax attention
                                            (F.scaled_dot_product_attention, is_causal, scale
                                            1 / sqrt(d / heads)) with dropout(p) on the attention
                                            weights in training only; c_proj Linear(d, d, no bias)
                                            N(0, 0.02 / sqrt(2 layers)); residual dropout(p)
    x = x + mlp(ln_2(x))                   c_fc Linear(d, ff_mult d, no bias) N(0, 0.02), exact
                                            (erf) GELU, c_proj Linear(ff_mult d, d, no bias)
                                            N(0, 0.02 / sqrt(2 layers)), dropout(p)
  logits = ln_f(x) @ wte^T                 the head tied to the token table
LayerNorm with a weight (init 1) and no bias, eps 1e-5. shakespeare-gpt: context 256, d 384,
6 heads, 6 layers, ff_mult 4, dropout 0.2, batch 64; shakespeare-gpt-mini (`--task
shakespeare-gpt-mini` or `--task-file models/shakespeare-gpt-mini.toml`): context 64, d 128,
4 heads, 4 layers, dropout 0, batch 12. Parameters (wpe included, the tied head once): 10,818,432
and 828,544. Also austen-gpt-mini (`--task austen-gpt-mini`: the mini model on data/text/austen.txt
re-encoded as bytes, `[data] text_encoding = "bytes"`); any `kind = "gpt"` task on the shakespeare
or text dataset is accepted (on the text dataset without text_encoding the vocabulary is the
file's distinct characters, as joulebench's). `[finetune]` (joulebench's finetune variant, from
austen-gpt-mini's checkpoint) is not mirrored: this program trains from scratch.

Data (jbtorch.py): data/shakespeare/shakespeare.txt.gz, SHA-256-checked, byte-level (the ids
are the raw bytes, vocabulary 256 whichever bytes occur), the first floor(0.9 n) bytes train and
the rest held out, non-overlapping windows of context + 1 bytes as text-charlm's. The loss is the
mean cross-entropy over every position of the batch. The metric ("held-out-loss") is the mean
cross-entropy in nats over every position of the first `eval_max_samples` (256) held-out windows,
in f32 with the model in eval mode (no dropout), printed as MLLOG `eval_loss`; the target is
reached at the first eval with eval_loss <= `[target] value`. The chance level (the unigram
entropy of the eval targets) is joulebench's to compute and is not needed here. The optimizer is
nanoGPT's train.py: AdamW with weight decay on the matrices only (`decay = "matrices"`: dim >= 2,
so wte, wpe and every Linear; the LayerNorm weights get 0), the cosine schedule with linear
warm-up (`schedule = "cosine"`, `lr_warmup_steps`, `min_lr`, `decay_steps`, nanoGPT's get_lr with
the 0-based step index) and the gradient norm clipped to `clip_grad_norm` before each step.
Batch order, warm-up (random tokens), eval cadence, budget, stop rule, precision and the MLLOG
output are jbtorch.py's (its docstring says what each mirrors in joulebench and how).

Known differences from joulebench's candle run: the initial weights, the batch order and the
dropout masks come from PyTorch's generators, not joulebench's ChaCha8 streams (same
distributions, different numbers); kernels sum in another order. PyTorch's SDPA picks its own
kernel (flash / memory-efficient / math on CUDA, a fused kernel on the CPU), and its attention
dropout is drawn inside that kernel. Under bf16-amp, which ops run in bf16 is autocast's choice
(PyTorch's op lists; linear and SDPA in bf16, layer norm and the loss in f32), not joulebench's
per-op-class policy (src/engine/precision.rs). nanoGPT itself draws the tied weight twice (Embedding,
then Linear init of the same tensor); here it is drawn once, from the same N(0, 0.02).

Usage: shakespeare_gpt.py --seed N [--precision f32|bf16-amp|tf32] [--device cpu|cuda]
       [--threads N] [--task NAME | --task-file PATH] [--data-dir PATH] [--full-budget]
       [--max-steps N]
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
    for k in ("kept_heads", "ff_hidden"):
        if k in m:
            raise jbtorch.BadInput(f"task file: key 'model.{k}' (a structurally pruned GPT) is "
                                   "not mirrored here")

    def key(k, conv, ok):
        v = m.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not ok(conv(v)) \
                or conv(v) != v:
            raise jbtorch.BadInput(f"task file: a gpt needs 'model.{k}' ({v!r} is not valid): "
                                   "context, d_model, heads, layers, ff_mult positive integers, "
                                   "dropout in [0, 1)")
        return conv(v)

    ctx = key("context", int, lambda v: v >= 1)
    d = key("d_model", int, lambda v: v >= 1)
    heads = key("heads", int, lambda v: v >= 1)
    n_layers = key("layers", int, lambda v: v >= 1)
    ff = key("ff_mult", int, lambda v: v >= 1)
    drop = key("dropout", float, lambda v: 0.0 <= v < 1.0) if "dropout" in m else 0.0
    if d % heads:
        raise jbtorch.BadInput(f"task file: key 'model.heads' ({heads}) must divide "
                               f"'model.d_model' ({d})")
    vocab = info["vocab"]
    std, proj_std = 0.02, 0.02 / math.sqrt(2 * n_layers)

    def linear(fi, fo, sd):
        lin = nn.Linear(fi, fo, bias=False)
        with torch.no_grad():
            nn.init.normal_(lin.weight, mean=0.0, std=sd)
        return lin

    def layer_norm():
        return nn.LayerNorm(d, eps=1e-5, bias=False)  # weight 1, trainable; no bias

    class CausalSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = linear(d, 3 * d, std)
            self.c_proj = linear(d, d, proj_std)
            self.resid_dropout = nn.Dropout(drop)

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.c_attn(x).split(d, dim=2)
            q, k, v = (z.view(b, t, heads, d // heads).transpose(1, 2) for z in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=None,
                                               dropout_p=drop if self.training else 0.0,
                                               is_causal=True)
            y = y.transpose(1, 2).contiguous().view(b, t, d)
            return self.resid_dropout(self.c_proj(y))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc = linear(d, ff * d, std)
            self.gelu = nn.GELU()  # exact (erf)
            self.c_proj = linear(ff * d, d, proj_std)
            self.dropout = nn.Dropout(drop)

        def forward(self, x):
            return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = layer_norm()
            self.attn = CausalSelfAttention()
            self.ln_2 = layer_norm()
            self.mlp = MLP()

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            # Draw order: wte, wpe, then per block c_attn, attn.c_proj, c_fc, mlp.c_proj.
            self.wte = nn.Embedding(vocab, d)
            self.wpe = nn.Embedding(ctx, d)
            with torch.no_grad():
                nn.init.normal_(self.wte.weight, mean=0.0, std=std)
                nn.init.normal_(self.wpe.weight, mean=0.0, std=std)
            self.drop = nn.Dropout(drop)
            self.h = nn.ModuleList(Block() for _ in range(n_layers))
            self.ln_f = layer_norm()

        def forward(self, idx):
            t = idx.shape[1]
            x = self.drop(self.wte(idx) + self.wpe.weight[:t])
            for blk in self.h:
                x = blk(x)
            return F.linear(self.ln_f(x), self.wte.weight)  # tied head, no bias

    return GPT()


if __name__ == "__main__":
    sys.exit(jbtorch.main("shakespeare-gpt", "gpt", ("shakespeare", "text"), build))
