package org.moe4j.engine.model;

import java.lang.foreign.MemorySegment;
import org.moe4j.simd.Convert;
import org.moe4j.simd.Tensor;

/**
 * {@code h = x + Wo · Attn(RoPE(q), RoPE(k), v)}, {@code q, k, v = W{q,k,v} · RMSNorm(x)} (QK-RMSNorm over the whole
 * q and k when configured): one decoder layer's attention block — its parameter offsets, forward and backward,
 * over the activations it is handed. A training runner gives each layer its own {@link Activations} (the backward
 * reads them); a forward-only runner gives every layer the same one. With a {@link KvCache} (inference) the new
 * rows' keys and values are appended to it and the queries attend everything cached for their sequence.
 */
final class AttentionBlock {
    /** The forward's activations [maxTokens, ...]; what the backward reads. */
    static final class Activations {
        final Tensor xn1, rstd1, q, k, v, att, lse, hres;
        final Tensor qraw, kraw, qr, kr; // QK-norm only
        // exact-row views for the attention kernel, rebuilt when the row count changes
        private int viewN = -1;
        Tensor qV, kV, vV, attV, lseV;

        Activations(BlockContext x, String p) {
            int maxN = x.maxN;
            if (x.c.qkNorm()) {
                qraw = x.ws.allocate(p + "qraw", maxN, x.qw);
                kraw = x.ws.allocate(p + "kraw", maxN, x.kw);
                qr = x.ws.allocate(p + "qrstd", maxN);
                kr = x.ws.allocate(p + "krstd", maxN);
            } else {
                qraw = kraw = qr = kr = null;
            }
            xn1 = x.ws.allocate(p + "xn1", maxN, x.d);
            rstd1 = x.ws.allocate(p + "rstd1", maxN);
            q = x.ws.allocate(p + "q", maxN, x.qw);
            k = x.ws.allocate(p + "k", maxN, x.kw);
            v = x.ws.allocate(p + "v", maxN, x.kw);
            att = x.ws.allocate(p + "att", maxN, x.qw);
            lse = x.ws.allocate(p + "lse", maxN, x.H);
            hres = x.ws.allocate(p + "h", maxN, x.d);
        }

        /**
         * Exact-row views for n rows, made once per n and kept: a generator alternates prefill and decode row
         * counts, and remaking five views at every switch was the only heap allocation of a decode step.
         */
        void views(int n) {
            if (viewN == n) return;
            if (viewCache == null) viewCache = new Tensor[q.dim(0) + 1][];
            Tensor[] t = viewCache[n];
            if (t == null) {
                t = new Tensor[] {q.rows(0, n), k.rows(0, n), v.rows(0, n), att.rows(0, n), lse.rows(0, n)};
                viewCache[n] = t;
            }
            qV = t[0];
            kV = t[1];
            vV = t[2];
            attV = t[3];
            lseV = t[4];
            viewN = n;
        }

        private Tensor[][] viewCache;
    }

    private final BlockContext x;
    final int l;
    final Activations a;
    private final long wNorm1, wq, wk, wv, wo, wqn, wkn;
    // exact-row views of the backward scratch
    private int gradViewN = -1;
    private Tensor dqV, dkV, dvV, dattV;

    AttentionBlock(BlockContext x, int l, Activations a) {
        this.x = x;
        this.l = l;
        this.a = a;
        ModelWeights w = x.weights;
        wNorm1 = w.vectorOffset(ParamLayout.preAttentionNorm(l));
        wq = w.matrixOffset(ParamLayout.qProj(l));
        wk = w.matrixOffset(ParamLayout.kProj(l));
        wv = w.matrixOffset(ParamLayout.vProj(l));
        wo = w.matrixOffset(ParamLayout.oProj(l));
        wqn = x.c.qkNorm() ? w.vectorOffset(ParamLayout.qNorm(l)) : -1;
        wkn = x.c.qkNorm() ? w.vectorOffset(ParamLayout.kNorm(l)) : -1;
    }

    /** x [N, d] -> a.hres [N, d]. cache: null in training; the runner's KV cache in inference. */
    void forward(MemorySegment xs, KvCache cache) {
        BlockContext x = this.x;
        Batch b = x.batch;
        int N = b.N, d = x.d, qw = x.qw, kw = x.kw;
        MemorySegment P = x.P;
        x.ops.rmsNorm(xs, 0, P, wNorm1, a.xn1.segment(), 0, a.rstd1.segment(), 0, d, x.eps, N);
        MemorySegment xn1 = a.xn1.segment();
        boolean qkNorm = x.c.qkNorm();
        MemorySegment qDst = qkNorm ? a.qraw.segment() : a.q.segment();
        MemorySegment kDst = qkNorm ? a.kraw.segment() : a.k.segment();
        x.linear(N, qw, d, xn1, 0, d, wq, 0f, qDst, 0, qw);
        x.linear(N, kw, d, xn1, 0, d, wk, 0f, kDst, 0, kw);
        x.linear(N, kw, d, xn1, 0, d, wv, 0f, a.v.segment(), 0, kw);
        if (qkNorm) {
            x.ops.rmsNorm(qDst, 0, P, wqn, a.q.segment(), 0, a.qr.segment(), 0, qw, x.eps, N);
            x.ops.rmsNorm(kDst, 0, P, wkn, a.k.segment(), 0, a.kr.segment(), 0, kw, x.eps, N);
        }
        x.ops.rope(x.rope, a.q.segment(), x.H, b.posOfRow, N, false);
        x.ops.rope(x.rope, a.k.segment(), x.Hkv, b.posOfRow, N, false);
        a.views(N);
        if (cache == null) selfAttention(x.docMask ? b.docSeg : null);
        else cachedAttention(cache);
        MemorySegment hres = a.hres.segment();
        MemorySegment.copy(xs, 0, hres, 0, (long) N * d * 4);
        x.linear(N, d, qw, a.att.segment(), 0, qw, wo, 1f, hres, 0, d);
    }

    /** Attention within the batch's own rows (training, and a prefill that starts every sequence at position 0). */
    private void selfAttention(MemorySegment doc) {
        Batch b = x.batch;
        if (b.seqLen > 0) {
            x.attention.forward(a.qV, a.kV, a.vV, doc, a.attV, a.lseV, b.B, b.seqLen, x.pool);
        } else {
            for (int i = 0; i < b.B; i++) {
                int s = b.seqStart[i], n = b.seqStart[i + 1] - s;
                x.attention.forward(a.q.rows(s, n), a.k.rows(s, n), a.v.rows(s, n),
                        doc == null ? null : doc.asSlice(s * 4L, n * 4L), a.att.rows(s, n), a.lse.rows(s, n), 1, n, x.pool);
            }
        }
    }

    /** Appends the rows' keys and values to their cache slots, then attends over the cache. */
    private void cachedAttention(KvCache cache) {
        Batch b = x.batch;
        int kw = x.kw, dh = x.dh, Hkv = x.Hkv;
        MemorySegment ks = a.k.segment(), vs = a.v.segment(), kc = cache.keys(l), vc = cache.values(l);
        boolean bf16 = cache.bf16();
        boolean fresh = true;
        for (int i = 0; i < b.B; i++) {
            int s = b.seqStart[i], n = b.seqStart[i + 1] - s;
            // the cache is head-major: each row's Hkv heads go to Hkv blocks of positions
            for (int g = 0; g < Hkv; g++) {
                long dst = cache.offset(b.slot[i], g, b.firstPos[i]);
                for (int t = 0; t < n; t++) {
                    long src = (long) (s + t) * kw + (long) g * dh, to = dst + (long) t * dh;
                    if (bf16) {
                        Convert.f32ToBf16(ks, src, kc, to, dh);
                        Convert.f32ToBf16(vs, src, vc, to, dh);
                    } else {
                        MemorySegment.copy(ks, src * 4, kc, to * 4, dh * 4L);
                        MemorySegment.copy(vs, src * 4, vc, to * 4, dh * 4L);
                    }
                }
            }
            fresh &= b.firstPos[i] == 0;
        }
        // a prompt that starts its sequence attends only to itself: the tiled kernel is faster for many rows
        if (fresh && b.N > b.B) selfAttention(null);
        else x.cachedAttention.forward(b.N, b.posOfRow, b.slotOfRow, a.q.segment(), cache.keys(l), cache.values(l),
                bf16, cache.maxPositions(), a.att.segment(), x.pool);
    }

    /** dx holds dL/dh on entry and dL/dx on return (the residual plus the attention path). */
    void backward(MemorySegment xs) {
        BlockContext x = this.x;
        Batch b = x.batch;
        int N = b.N, d = x.d, qw = x.qw, kw = x.kw;
        MemorySegment P = x.P, G = x.G;
        if (gradViewN != N) {
            dqV = x.dq.rows(0, N);
            dkV = x.dk.rows(0, N);
            dvV = x.dv.rows(0, N);
            dattV = x.datt.rows(0, N);
            gradViewN = N;
        }
        MemorySegment dxs = x.dx.segment();
        MemorySegment att = a.att.segment(), datts = x.datt.segment();
        x.linearBackWeight(d, qw, N, dxs, 0, d, att, 0, qw, wo);
        x.linearBackInput(N, qw, d, dxs, 0, d, wo, 0f, datts, 0, qw);
        MemorySegment doc = x.docMask ? b.docSeg : null;
        if (b.seqLen > 0) {
            x.attention.backward(a.qV, a.kV, a.vV, doc, a.attV, a.lseV, dattV, dqV, dkV, dvV, b.B, b.seqLen, x.pool);
        } else {
            for (int i = 0; i < b.B; i++) {
                int s = b.seqStart[i], n = b.seqStart[i + 1] - s;
                x.attention.backward(a.q.rows(s, n), a.k.rows(s, n), a.v.rows(s, n),
                        doc == null ? null : doc.asSlice(s * 4L, n * 4L), a.att.rows(s, n), a.lse.rows(s, n),
                        x.datt.rows(s, n), x.dq.rows(s, n), x.dk.rows(s, n), x.dv.rows(s, n), 1, n, x.pool);
            }
        }
        MemorySegment dqs = x.dq.segment(), dks = x.dk.segment(), dvs = x.dv.segment(), xn1 = a.xn1.segment();
        x.ops.rope(x.rope, dqs, x.H, b.posOfRow, N, true);
        x.ops.rope(x.rope, dks, x.Hkv, b.posOfRow, N, true);
        if (x.c.qkNorm()) {
            x.ops.rmsNormBackward(dqs, 0, a.qraw.segment(), 0, P, wqn, a.qr.segment(), 0, dqs, 0, false, G, wqn, qw, N);
            x.ops.rmsNormBackward(dks, 0, a.kraw.segment(), 0, P, wkn, a.kr.segment(), 0, dks, 0, false, G, wkn, kw, N);
        }
        x.linearBackWeight(qw, d, N, dqs, 0, qw, xn1, 0, d, wq);
        x.linearBackWeight(kw, d, N, dks, 0, kw, xn1, 0, d, wk);
        x.linearBackWeight(kw, d, N, dvs, 0, kw, xn1, 0, d, wv);
        MemorySegment dxn1 = x.tmp.segment();
        x.linearBackInput(N, d, qw, dqs, 0, qw, wq, 0f, dxn1, 0, d);
        x.linearBackInput(N, d, kw, dks, 0, kw, wk, 1f, dxn1, 0, d);
        x.linearBackInput(N, d, kw, dvs, 0, kw, wv, 1f, dxn1, 0, d);
        x.ops.rmsNormBackward(dxn1, 0, xs, 0, P, wNorm1, a.rstd1.segment(), 0, dxs, 0, true, G, wNorm1, d, N);
    }

    /** "tensor 'name' row r, column c" of the first non-finite value of this block's forward, or null. */
    String firstNonFinite() {
        return x.scan(new Tensor[] {a.xn1, a.q, a.k, a.v, a.att, a.hres},
                new String[] {"attention norm", "q", "k", "v", "attention output", "residual after attention"});
    }
}
