#!/usr/bin/env python3
"""The PyTorch side of the engine comparison: the same MoE LM as moe4j (pre-norm decoder, RoPE attention, top-k
routed SwiGLU experts, final norm, untied LM head, CE + global load balance + router z-loss, AdamW), written the way a
PyTorch user would (loop over experts with index_select / index_add_), timed for one training step and one forward.

Run through bench/scripts/compare-torch.sh, which sets the environment BASELINES.md asks for (OpenMP OpenBLAS,
OPENBLAS_CORETYPE unset, 2 threads) and runs moe4j's StepBench in the same script.
"""
import math, os, sys, time
import torch
import torch.nn.functional as F

CONFIGS = {
    "small": dict(V=8192, d=256, L=4, H=4, E=16, k=2, h=512),
    "bench": dict(V=8192, d=512, L=4, H=8, E=32, k=4, h=512),
}


class RMSNorm(torch.nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.w


def rope(x, cos, sin):  # x [B, H, T, Dh], rotate-half
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Block(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        d, H, E, h = c["d"], c["H"], c["E"], c["h"]
        self.H, self.E, self.k = H, E, c["k"]
        self.n1, self.n2 = RMSNorm(d), RMSNorm(d)
        self.qkv = torch.nn.Linear(d, 3 * d, bias=False)
        self.o = torch.nn.Linear(d, d, bias=False)
        self.router = torch.nn.Linear(d, E, bias=False)
        # one module per expert, as PyTorch MoE code does (slicing one [E, h, d] parameter instead makes autograd
        # materialise a full-size gradient for every expert: ~6x slower on the bench config)
        self.experts = torch.nn.ModuleList(
            torch.nn.ModuleDict(dict(w1=torch.nn.Linear(d, h, bias=False), w3=torch.nn.Linear(d, h, bias=False),
                                     w2=torch.nn.Linear(h, d, bias=False))) for _ in range(E))

    def forward(self, x, cos, sin):
        B, T, d = x.shape
        q, k, v = self.qkv(self.n1(x)).split(d, dim=-1)
        q, k, v = (t.view(B, T, self.H, -1).transpose(1, 2) for t in (q, k, v))
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        # torch 1.13 (Debian) has no scaled_dot_product_attention: the plain causal form
        s = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
        s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        a = s.softmax(-1) @ v
        x = x + self.o(a.transpose(1, 2).reshape(B, T, d))
        u = self.n2(x).view(B * T, d)
        z = self.router(u)
        p = z.softmax(-1)
        gate, idx = p.topk(self.k, dim=-1)
        out = torch.zeros_like(u)
        for e in range(self.E):
            tok, slot = (idx == e).nonzero(as_tuple=True)
            if tok.numel() == 0:
                continue
            xe = u.index_select(0, tok)
            ex = self.experts[e]
            ye = ex["w2"](F.silu(ex["w1"](xe)) * ex["w3"](xe))
            out.index_add_(0, tok, ye * gate[tok, slot].unsqueeze(1))
        counts = torch.bincount(idx.flatten(), minlength=self.E).float()
        lb = self.E / self.k * (counts / (B * T) * p.mean(0)).sum()
        zl = torch.logsumexp(z, -1).pow(2).mean()
        return x + out.view(B, T, d), lb, zl


class Model(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.emb = torch.nn.Embedding(c["V"], c["d"])
        self.blocks = torch.nn.ModuleList(Block(c) for _ in range(c["L"]))
        self.norm = RMSNorm(c["d"])
        self.head = torch.nn.Linear(c["d"], c["V"], bias=False)

    def forward(self, tokens, cos, sin):
        x = self.emb(tokens)
        lb = zl = 0.0
        for b in self.blocks:
            x, l1, l2 = b(x, cos, sin)
            lb, zl = lb + l1, zl + l2
        logits = self.head(self.norm(x))
        ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        L = len(self.blocks)
        return ce + 0.1 * lb / L + 0.001 * zl / L


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    steps = int(sys.argv[sys.argv.index("--steps") + 1]) if "--steps" in sys.argv else 5
    names = [a for a in sys.argv[1:] if a in CONFIGS] or ["small", "bench"]
    B, T = 8, 256
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, BLAS: "
          f"the system libblas (LD_LIBRARY_PATH={os.environ.get('LD_LIBRARY_PATH', '')}), "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    print("| config | phase | tokens/s | ms/step |")
    print("|---|---|---:|---:|")
    for name in names:
        c = CONFIGS[name]
        m = Model(c)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
        dh = c["d"] // c["H"]
        inv = 10000.0 ** (-torch.arange(0, dh // 2).float() * 2 / dh)
        ang = torch.arange(T).float()[:, None] * inv[None, :]
        cos, sin = ang.cos(), ang.sin()
        tokens = torch.randint(0, c["V"], (B, T))

        def train():
            opt.zero_grad(set_to_none=True)
            loss = m(tokens, cos, sin)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            opt.step()

        def fwd():
            with torch.no_grad():
                m(tokens, cos, sin)

        for phase, fn in (("train step", train), ("forward", fwd)):
            for _ in range(2):
                fn()
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            sec = (time.perf_counter() - t0) / steps
            print(f"| {name} | {phase} | {B * T / sec:,.0f} | {sec * 1e3:.1f} |", flush=True)


if __name__ == "__main__":
    main()
