package org.moe4j.engine.model;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.LbScope;
import org.moe4j.engine.config.LossWeights;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.routing.ExpertSet;
import org.moe4j.engine.routing.Router;
import org.moe4j.engine.routing.Routing;
import org.moe4j.engine.routing.RoutingControl;
import org.moe4j.engine.routing.RoutingRng;
import org.moe4j.simd.Attention;
import org.moe4j.simd.Embedding;
import org.moe4j.simd.Gemm;
import org.moe4j.simd.Rope;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.VectorOps;
import org.moe4j.simd.WorkerPool;
import org.moe4j.simd.Workspace;

/**
 * Forward and backward of the MoE language model (ALGORITHMS.md sections 1-3, DESIGN.md "One training step") over
 * a batch of packed sequences, with every activation in a workspace allocated once for (maxTokens, maxSequences).
 *
 * <pre>
 *   x0 = embed(tokens)
 *   per layer:  h = x + Wo·Attn(RoPE(q), RoPE(k), v),  q,k,v = W{q,k,v}·RMSNorm(x)   (QK-norm optional)
 *               y = h + Σ_{kept slots} g · W2_e (silu(W1_e u) ⊙ W3_e u),  u = RMSNorm(h)   (shared: g = 1)
 *   logits = W_lm · RMSNorm(x_L);  loss = CE + w_oz·outZ + w_lb·mean lb + w_z·mean z + w_erc·mean erc
 * </pre>
 * Routing is the {@link Router} pipeline per layer, driven by one {@link RoutingControl} per layer (training
 * defaults from the config; pin pools and k' through {@link #control(int)}). Sparse dispatch: the router's
 * counting sort gives each expert a contiguous block of rows; each expert runs two GEMMs on its block; gates
 * scale the rows as they are added back per token (race-free, no atomics).
 *
 * <p>Each decoder layer is an {@code AttentionBlock} and a {@code MoeBlock}, each holding its parameter offsets,
 * the activations its backward needs, its forward and its backward. They are inner classes because every block
 * shares the transformer's kernels, batch and backward scratch (one block runs at a time).
 *
 * <p>{@link #forward} then {@link #backward} ADD d(total)/d(param) into the model's gradient buffer. Every
 * buffer is allocated in the constructor; a step with an unchanged batch shape allocates nothing.
 */
public final class MoeTransformer implements AutoCloseable {
    private static final ValueLayout.OfInt INT = ValueLayout.JAVA_INT;

    private final MoeModel model;
    private final ModelConfig c;
    private final Gemm gemm;
    private final WorkerPool pool;
    private final RowOps ops;
    private final Workspace ws;
    private final Attention attention;
    private final Rope rope;
    private final int maxN, maxSeqs, d, V, L, H, Hkv, dh, qw, kw, E, shared, routed, hid, kTotMax;
    private final float eps;
    private final MemorySegment P, G;
    private final StepStats stats;
    private final RoutingControl[] controls;
    private final RoutingRng ercRng;
    private RoutingRng routingRng;
    private final Layer[] layers;
    private boolean docMask;
    private boolean ercOn;

    // batch
    private int N, B, seqLen; // seqLen > 0 when every sequence has it, else 0
    private final int[] tokens, seqStart, posOfRow, targets, uniformStarts;
    private final MemorySegment idSeg, targetSeg, docSeg;
    private final Tensor xf, rstdf, logits, lseV, dx, tmp;
    private final long embOff, finalNormOff, lmOff;
    private int viewN = -1;
    private Tensor dxV;
    private final Tensor datt, dq, dk, dv, dye, dact, dlogR;
    private final float[] dGate, dLogits;

    public MoeTransformer(MoeModel model, int maxTokens, int maxSequences, Gemm gemm, WorkerPool pool) {
        this(model, maxTokens, maxSequences, model.config().maxRoutedK(), gemm, pool);
    }

    /**
     * A transformer for batches of up to maxTokens tokens in up to maxSequences sequences, whose routing may pick
     * up to maxRoutedK routed experts per token (the config's k', or Matryoshka's kMax; more for layer budgets).
     */
    public MoeTransformer(MoeModel model, int maxTokens, int maxSequences, int maxRoutedK, Gemm gemm, WorkerPool pool) {
        if (maxRoutedK < 1 || maxRoutedK > model.config().routedExperts())
            throw new Moe4jException("MoeTransformer: maxRoutedK = " + maxRoutedK + " must be in [1, routed experts = "
                    + model.config().routedExperts() + "]");
        if (maxTokens < 1 || maxSequences < 1 || maxSequences > maxTokens)
            throw new Moe4jException("MoeTransformer: maxTokens = " + maxTokens + ", maxSequences = " + maxSequences
                    + ": need 1 <= maxSequences <= maxTokens");
        this.model = model;
        this.c = model.config();
        this.gemm = gemm;
        this.pool = pool;
        this.maxN = maxTokens;
        this.maxSeqs = maxSequences;
        d = c.d();
        V = c.vocab();
        L = c.layers();
        H = c.heads();
        Hkv = c.kvHeads();
        dh = c.headSize();
        qw = H * dh;
        kw = Hkv * dh;
        E = c.experts();
        shared = c.sharedExperts();
        routed = c.routedExperts();
        hid = c.expertHidden();
        kTotMax = Math.max(maxRoutedK, c.maxRoutedK()) + shared;
        eps = (float) c.normEps();
        P = model.params();
        G = model.grads();
        ws = new Workspace();
        int slots = maxN * Math.max(kTotMax, 1);
        ops = new RowOps(pool, Math.max(Math.max(d, qw), kw), ws.arena());
        attention = new Attention(c.maxSeq(), H, Hkv, dh, pool.threads());
        rope = new Rope(Math.max(c.maxSeq(), 2), dh, c.ropeTheta() > 1 ? c.ropeTheta() : 10000.0);
        stats = new StepStats(L);
        controls = new RoutingControl[L];
        RoutingRng rng = new RoutingRng(0x5EEDL);
        routingRng = rng;
        for (int l = 0; l < L; l++) controls[l] = RoutingControl.training(c, rng);
        ercRng = new RoutingRng(0xE5CL);
        ercOn = c.loss().erc() > 0;

        tokens = new int[maxN];
        seqStart = new int[maxSequences + 1];
        uniformStarts = new int[maxSequences + 1];
        posOfRow = new int[maxN];
        targets = new int[maxN];
        idSeg = ws.arena().allocate(maxN * 4L, 64);
        targetSeg = ws.arena().allocate(maxN * 4L, 64);
        docSeg = ws.arena().allocate(maxN * 4L, 64);

        ParamLayout lay = model.layout();
        embOff = lay.offset(ParamLayout.embedTokens());
        finalNormOff = lay.offset(ParamLayout.finalNorm());
        lmOff = lay.offset(ParamLayout.lmHead());
        layers = new Layer[L + 1];
        for (int l = 0; l < L; l++) layers[l] = new Layer(l, lay, slots);
        layers[L] = new Layer(L, null, 0); // holds x_L only
        xf = ws.allocate("final.xn", maxN, d);
        rstdf = ws.allocate("final.rstd", maxN);
        logits = ws.allocate("final.logits", maxN, V);
        lseV = ws.allocate("final.lse", maxN);
        dx = ws.allocate("grad.dx", maxN, d);
        tmp = ws.allocate("grad.tmp", maxN, Math.max(d, 1));
        datt = ws.allocate("grad.datt", maxN, qw);
        dq = ws.allocate("grad.dq", maxN, qw);
        dk = ws.allocate("grad.dk", maxN, kw);
        dv = ws.allocate("grad.dv", maxN, kw);
        dye = ws.allocate("grad.dye", slots, d);
        dact = ws.allocate("grad.dact", slots, hid);
        dlogR = ws.allocate("grad.dRouterLogits", maxN, E);
        dGate = new float[slots];
        dLogits = new float[maxN * E];
    }

    /** One decoder layer: its input on the residual stream, its attention block and its MoE block. */
    private final class Layer {
        final int l;
        final Tensor x; // input of this layer [maxN, d] (layer L: the final residual stream)
        final AttentionBlock attn;
        final MoeBlock moe;

        Layer(int l, ParamLayout lay, int slots) {
            this.l = l;
            x = ws.allocate("layer" + l + ".x", maxN, d);
            attn = lay == null ? null : new AttentionBlock(l, lay);
            moe = lay == null ? null : new MoeBlock(l, lay, slots);
        }
    }

    /**
     * h = x + Wo · Attn(RoPE(q), RoPE(k), v), q, k, v = W{q,k,v} · RMSNorm(x) (QK-RMSNorm over the whole q and k
     * when configured): its parameter offsets, the activations its backward needs, forward and backward.
     */
    private final class AttentionBlock {
        final int l;
        final long wNorm1, wq, wk, wv, wo;
        long wqn, wkn;
        final Tensor xn1, rstd1, q, k, v, att, lse, hres;
        Tensor qraw, kraw, qr, kr;
        // exact-row views for the attention kernel, rebuilt when the batch shape changes
        Tensor qV, kV, vV, attV, lseV2, dqV, dkV, dvV, dattV;

        AttentionBlock(int l, ParamLayout lay) {
            this.l = l;
            String p = "layer" + l + ".";
            wNorm1 = lay.offset(ParamLayout.preAttentionNorm(l));
            wq = lay.offset(ParamLayout.qProj(l));
            wk = lay.offset(ParamLayout.kProj(l));
            wv = lay.offset(ParamLayout.vProj(l));
            wo = lay.offset(ParamLayout.oProj(l));
            if (c.qkNorm()) {
                wqn = lay.offset(ParamLayout.qNorm(l));
                wkn = lay.offset(ParamLayout.kNorm(l));
                qraw = ws.allocate(p + "qraw", maxN, qw);
                kraw = ws.allocate(p + "kraw", maxN, kw);
                qr = ws.allocate(p + "qrstd", maxN);
                kr = ws.allocate(p + "krstd", maxN);
            }
            xn1 = ws.allocate(p + "xn1", maxN, d);
            rstd1 = ws.allocate(p + "rstd1", maxN);
            q = ws.allocate(p + "q", maxN, qw);
            k = ws.allocate(p + "k", maxN, kw);
            v = ws.allocate(p + "v", maxN, kw);
            att = ws.allocate(p + "att", maxN, qw);
            lse = ws.allocate(p + "lse", maxN, H);
            hres = ws.allocate(p + "h", maxN, d);
        }

        void views(int n) {
            qV = q.rows(0, n);
            kV = k.rows(0, n);
            vV = v.rows(0, n);
            attV = att.rows(0, n);
            lseV2 = lse.rows(0, n);
            dqV = dq.rows(0, n);
            dkV = dk.rows(0, n);
            dvV = dv.rows(0, n);
            dattV = datt.rows(0, n);
        }

        /** x [N, d] -> hres [N, d]. */
        void forward(MemorySegment x) {
            ops.rmsNorm(x, 0, P, wNorm1, xn1.segment(), 0, rstd1.segment(), 0, d, eps, N);
            MemorySegment xn1 = this.xn1.segment();
            MemorySegment qDst = c.qkNorm() ? qraw.segment() : q.segment();
            MemorySegment kDst = c.qkNorm() ? kraw.segment() : k.segment();
            gemm.sgemm(false, true, N, qw, d, 1f, xn1, 0, d, P, wq, d, 0f, qDst, 0, qw);
            gemm.sgemm(false, true, N, kw, d, 1f, xn1, 0, d, P, wk, d, 0f, kDst, 0, kw);
            gemm.sgemm(false, true, N, kw, d, 1f, xn1, 0, d, P, wv, d, 0f, v.segment(), 0, kw);
            if (c.qkNorm()) {
                ops.rmsNorm(qDst, 0, P, wqn, q.segment(), 0, qr.segment(), 0, qw, eps, N);
                ops.rmsNorm(kDst, 0, P, wkn, k.segment(), 0, kr.segment(), 0, kw, eps, N);
            }
            ops.rope(rope, q.segment(), H, posOfRow, N, false);
            ops.rope(rope, k.segment(), Hkv, posOfRow, N, false);
            MemorySegment doc = docMask ? docSeg : null;
            if (seqLen > 0) {
                attention.forward(qV, kV, vV, doc, attV, lseV2, B, seqLen, pool);
            } else {
                for (int i = 0; i < B; i++) {
                    int a = seqStart[i], n = seqStart[i + 1] - a;
                    attention.forward(q.rows(a, n), k.rows(a, n), v.rows(a, n),
                            doc == null ? null : doc.asSlice(a * 4L, n * 4L), this.att.rows(a, n), lse.rows(a, n), 1, n, pool);
                }
            }
            MemorySegment hres = this.hres.segment();
            MemorySegment.copy(x, 0, hres, 0, (long) N * d * 4);
            gemm.sgemm(false, true, N, d, qw, 1f, att.segment(), 0, qw, P, wo, qw, 1f, hres, 0, d);
        }

        /** dx holds dL/dh on entry and dL/dx on return (the residual plus the attention path). */
        void backward(MemorySegment x) {
            MemorySegment dxs = dx.segment();
            MemorySegment att = this.att.segment(), datts = datt.segment();
            gemm.sgemm(true, false, d, qw, N, 1f, dxs, 0, d, att, 0, qw, 1f, G, wo, qw);
            gemm.sgemm(false, false, N, qw, d, 1f, dxs, 0, d, P, wo, qw, 0f, datts, 0, qw);
            MemorySegment doc = docMask ? docSeg : null;
            if (seqLen > 0) {
                attention.backward(qV, kV, vV, doc, attV, lseV2, dattV, dqV, dkV, dvV, B, seqLen, pool);
            } else {
                for (int i = 0; i < B; i++) {
                    int a = seqStart[i], n = seqStart[i + 1] - a;
                    attention.backward(q.rows(a, n), k.rows(a, n), v.rows(a, n),
                            doc == null ? null : doc.asSlice(a * 4L, n * 4L), this.att.rows(a, n), lse.rows(a, n),
                            datt.rows(a, n), dq.rows(a, n), dk.rows(a, n), dv.rows(a, n), 1, n, pool);
                }
            }
            MemorySegment dqs = dq.segment(), dks = dk.segment(), dvs = dv.segment(), xn1 = this.xn1.segment();
            ops.rope(rope, dqs, H, posOfRow, N, true);
            ops.rope(rope, dks, Hkv, posOfRow, N, true);
            if (c.qkNorm()) {
                ops.rmsNormBackward(dqs, 0, qraw.segment(), 0, P, wqn, qr.segment(), 0, dqs, 0, false, G, wqn, qw, N);
                ops.rmsNormBackward(dks, 0, kraw.segment(), 0, P, wkn, kr.segment(), 0, dks, 0, false, G, wkn, kw, N);
            }
            gemm.sgemm(true, false, qw, d, N, 1f, dqs, 0, qw, xn1, 0, d, 1f, G, wq, d);
            gemm.sgemm(true, false, kw, d, N, 1f, dks, 0, kw, xn1, 0, d, 1f, G, wk, d);
            gemm.sgemm(true, false, kw, d, N, 1f, dvs, 0, kw, xn1, 0, d, 1f, G, wv, d);
            MemorySegment dxn1 = tmp.segment();
            gemm.sgemm(false, false, N, d, qw, 1f, dqs, 0, qw, P, wq, d, 0f, dxn1, 0, d);
            gemm.sgemm(false, false, N, d, kw, 1f, dks, 0, kw, P, wk, d, 1f, dxn1, 0, d);
            gemm.sgemm(false, false, N, d, kw, 1f, dvs, 0, kw, P, wv, d, 1f, dxn1, 0, d);
            ops.rmsNormBackward(dxn1, 0, x, 0, P, wNorm1, rstd1.segment(), 0, dxs, 0, true, G,
                    wNorm1, d, N);
        }

        /** "tensor 'name' row r, column c" of the first non-finite value of this block's forward, or null. */
        String firstNonFinite() {
            return scan(new Tensor[] {xn1, q, k, v, att, hres},
                    new String[] {"attention norm", "q", "k", "v", "attention output", "residual after attention"});
        }
    }

    /**
     * y = h + Σ_{kept slots} g · W2_e (silu(W1_e u) ⊙ W3_e u), u = RMSNorm(h), shared experts with g = 1: the router
     * pipeline, the counting-sort dispatch, two GEMMs per expert over its contiguous rows, the per-token combine,
     * and ERC; forward and backward.
     */
    private final class MoeBlock {
        final int l;
        final long wNorm2, wr;
        final long[] w13, w2;
        final Tensor xn2, rstd2, rlogits, xe, a13, act, ye;
        final Router router;
        final Routing routing;
        final int[] rowOfSlot, keptList;
        final ExpertRouterCoupling erc;

        MoeBlock(int l, ParamLayout lay, int slots) {
            this.l = l;
            String p = "layer" + l + ".";
            wNorm2 = lay.offset(ParamLayout.preFeedForwardNorm(l));
            wr = lay.offset(ParamLayout.router(l));
            w13 = new long[E];
            w2 = new long[E];
            for (int j = 0; j < E; j++) {
                w13[j] = lay.offset(ParamLayout.gateProj(l, j));
                if (lay.offset(ParamLayout.upProj(l, j)) != w13[j] + (long) hid * d)
                    throw new IllegalStateException("layout: up_proj must follow gate_proj");
                w2[j] = lay.offset(ParamLayout.downProj(l, j));
            }
            xn2 = ws.allocate(p + "xn2", maxN, d);
            rstd2 = ws.allocate(p + "rstd2", maxN);
            rlogits = ws.allocate(p + "routerLogits", maxN, E);
            xe = ws.allocate(p + "expertIn", slots, d);
            a13 = ws.allocate(p + "expertGateUp", slots, 2 * hid);
            act = ws.allocate(p + "expertAct", slots, hid);
            ye = ws.allocate(p + "expertOut", slots, d);
            router = new Router(c, maxN, maxSeqs);
            routing = router.newRouting();
            rowOfSlot = new int[slots];
            keptList = new int[routed];
            erc = new ExpertRouterCoupling(d, hid, routed, gemm, ws.arena());
        }

        /** h [N, d] -> out [N, d]. */
        void forward(MemorySegment h, MemorySegment out) {
            MemorySegment xn2 = this.xn2.segment();
            ops.rmsNorm(h, 0, P, wNorm2, xn2, 0, rstd2.segment(), 0, d, eps, N);
            gemm.sgemm(false, true, N, E, d, 1f, xn2, 0, d, P, wr, d, 0f, rlogits.segment(), 0, E);
            Routing r = routing;
            if (VectorOps.firstNonFinite(rlogits.segment(), 0, (long) N * E) >= 0)
                throw new NonFiniteException(MoeTransformer.this.firstNonFinite());
            router.forward(rlogits, N, seqStart, B, tokens, controls[l], r);
            int kTot = r.kTot(), S = r.keptSlots();
            if (kTot > kTotMax)
                throw new Moe4jException("layer " + l + ": routing picked k' = " + r.kRouted() + " experts per token, this "
                        + "transformer was built for at most " + (kTotMax - shared) + " (pass maxRoutedK)");
            Arrays.fill(rowOfSlot, 0, N * kTot, -1);
            for (int i = 0; i < S; i++) rowOfSlot[r.perm[i]] = i;
            ops.gather(xn2, xe.segment(), r.perm, kTot, d, S);
            MemorySegment xe = this.xe.segment(), a13 = this.a13.segment(), act = this.act.segment(), ye = this.ye.segment();
            for (int e = 0; e < E; e++) {
                int a = r.offsets[e], n = r.offsets[e + 1] - a;
                if (n == 0) continue;
                gemm.sgemm(false, true, n, 2 * hid, d, 1f, xe, (long) a * d, d, P, w13[e], d, 0f, a13, (long) a * 2 * hid, 2 * hid);
            }
            ops.swiGlu(a13, 0, act, 0, hid, S);
            for (int e = 0; e < E; e++) {
                int a = r.offsets[e], n = r.offsets[e + 1] - a;
                if (n == 0) continue;
                gemm.sgemm(false, true, n, d, hid, 1f, act, (long) a * hid, hid, P, w2[e], hid, 0f, ye, (long) a * d, d);
            }
            MemorySegment.copy(h, 0, out, 0, (long) N * d * 4);
            ops.combine(ye, out, rowOfSlot, r.gate, kTot, d, N);
        }

        /** dx holds dL/dy on entry and dL/dh on return. */
        void backward(MemorySegment h, LossWeights w) {
            Routing r = routing;
            int kTot = r.kTot(), S = r.keptSlots();
            MemorySegment dxs = dx.segment(), xe = this.xe.segment(), a13 = this.a13.segment(), act = this.act.segment();
            MemorySegment ye = this.ye.segment(), dyes = dye.segment(), dacts = dact.segment();
            // MoE: y = h + Σ g·ye
            ops.combineBackward(ye, dxs, dyes, r.perm, r.gate, dGate, kTot, d, S);
            for (int e = 0; e < E; e++) {
                int a = r.offsets[e], n = r.offsets[e + 1] - a;
                if (n == 0) continue;
                gemm.sgemm(false, false, n, hid, d, 1f, dyes, (long) a * d, d, P, w2[e], hid, 0f, dacts, (long) a * hid, hid);
                gemm.sgemm(true, false, d, hid, n, 1f, dyes, (long) a * d, d, act, (long) a * hid, hid, 1f, G, w2[e], hid);
            }
            ops.swiGluBackward(dacts, 0, a13, 0, a13, 0, hid, S); // a13 now holds d[W1 x | W3 x]
            MemorySegment dxe = dyes; // dye is consumed; reuse it for the expert input gradient
            for (int e = 0; e < E; e++) {
                int a = r.offsets[e], n = r.offsets[e + 1] - a;
                if (n == 0) continue;
                gemm.sgemm(true, false, 2 * hid, d, n, 1f, a13, (long) a * 2 * hid, 2 * hid, xe, (long) a * d, d, 1f, G, w13[e], d);
                gemm.sgemm(false, false, n, d, 2 * hid, 1f, a13, (long) a * 2 * hid, 2 * hid, P, w13[e], d, 0f, dxe, (long) a * d, d);
            }
            MemorySegment dxn2 = tmp.segment();
            VectorOps.zero(dxn2, 0, (long) N * d);
            ops.scatterAdd(dxe, dxn2, rowOfSlot, kTot, d, N);
            // router: gates, load balance, z-loss
            router.backward(r, dGate, dLogits);
            router.loadBalanceBackward(r, c.routing().lbScope(), w.lb() / L, dLogits);
            router.zLossBackward(r, w.routerZ() / L, dLogits);
            MemorySegment dlog = dlogR.segment();
            MemorySegment.copy(dLogits, 0, dlog, Tensor.FLOAT, 0, N * E);
            MemorySegment xn2 = this.xn2.segment();
            gemm.sgemm(true, false, E, d, N, 1f, dlog, 0, E, xn2, 0, d, 1f, G, wr, d);
            gemm.sgemm(false, false, N, d, E, 1f, dlog, 0, E, P, wr, d, 1f, dxn2, 0, d);
            if (ercOn) erc.backward(w.erc() / L, P, G, wr, w13);
            ops.rmsNormBackward(dxn2, 0, h, 0, P, wNorm2, rstd2.segment(), 0, dxs, 0, true, G,
                    wNorm2, d, N);
        }

        String firstNonFinite() {
            String at = scan(new Tensor[] {xn2, rlogits}, new String[] {"feed-forward norm", "router logits"});
            if (at != null) return at;
            long i = VectorOps.firstNonFinite(ye.segment(), 0, (long) routing.keptSlots() * d);
            return i < 0 ? null : "tensor 'expert output' row " + i / d;
        }
    }

    /** The first non-finite value among the first N rows of the tensors, in order, as text; null if none. */
    private String scan(Tensor[] ts, String[] names) {
        for (int i = 0; i < ts.length; i++) {
            int width = ts[i].dim(1);
            long at = VectorOps.firstNonFinite(ts[i].segment(), 0, (long) N * width);
            if (at >= 0) return "tensor '" + names[i] + "' row " + at / width + ", column " + at % width;
        }
        return null;
    }

    public ModelConfig config() {
        return c;
    }

    public MoeModel model() {
        return model;
    }

    public int maxTokens() {
        return maxN;
    }

    public int maxSequences() {
        return maxSeqs;
    }

    /** The routing control of layer l (pools, k', subset, capacity); training defaults from the config. */
    public RoutingControl control(int l) {
        return controls[l];
    }

    /** Replaces every layer's control by the config's training (true) or evaluation (false) defaults. */
    public void useDefaults(boolean training, long seed) {
        RoutingRng rng = new RoutingRng(seed);
        routingRng = rng;
        for (int l = 0; l < L; l++) controls[l] = training ? RoutingControl.training(c, rng) : RoutingControl.eval(c);
        ercRng.setState(seed ^ 0xE5CL);
    }

    /** Restricts attention to the query's own document (EOS-delimited). */
    public void docMask(boolean on) {
        docMask = on;
    }

    /** Switches ERC off (weight 0 in the config also does). */
    public void erc(boolean on) {
        ercOn = on && c.loss().erc() > 0;
    }

    /** Pins ERC's noise u [E'kept, d] (kept order) of layer l; null draws fresh noise each step. */
    public void pinErcNoise(int l, float[] u) {
        layers[l].moe.erc.pinNoise(u);
    }

    /** The stream the default controls draw pool sizes and Matryoshka k from (its state goes into checkpoints). */
    public RoutingRng routingRng() {
        return routingRng;
    }

    public RoutingRng ercRng() {
        return ercRng;
    }

    public StepStats stats() {
        return stats;
    }

    /** The routing of layer l from the last forward. */
    public Routing routing(int l) {
        return layers[l].moe.routing;
    }

    /** Logits of the last forward [N, V] (overwritten by backward). */
    public Tensor logits() {
        return logits;
    }

    // --------------------------------------------------------------------------------------------------- batch

    /**
     * Sets the batch: {@code sequences} packed sequences, tokens[seqStart[i] .. seqStart[i+1]) each (token ids in
     * [0, vocab); an EOS opens a document). Labels are the next token within a sequence.
     */
    public void setBatch(int[] tokenIds, int[] starts, int sequences) {
        if (sequences < 1 || sequences > maxSeqs)
            throw new Moe4jException("batch: " + sequences + " sequences, this transformer takes 1.." + maxSeqs);
        int n = starts[sequences];
        if (starts[0] != 0 || n > maxN)
            throw new Moe4jException("batch: " + n + " tokens, this transformer takes at most " + maxN);
        int len = starts[1] - starts[0];
        boolean uniform = true;
        for (int i = 0; i < sequences; i++) {
            int li = starts[i + 1] - starts[i];
            if (li < 1) throw new Moe4jException("batch: sequence " + i + " is empty");
            if (li > c.maxSeq())
                throw new Moe4jException("batch: sequence " + i + " has " + li + " tokens, maxSeq is " + c.maxSeq());
            uniform &= li == len;
        }
        int doc = -1;
        for (int i = 0; i < sequences; i++) {
            for (int t = starts[i]; t < starts[i + 1]; t++) {
                int id = tokenIds[t];
                if (id < 0 || id >= V)
                    throw new Moe4jException("batch: token " + id + " at sequence " + i + ", position "
                            + (t - starts[i]) + " is outside the vocabulary [0, " + V + ")");
                tokens[t] = id;
                posOfRow[t] = t - starts[i];
                if (t == starts[i] || id == c.eosId()) doc++;
                docSeg.setAtIndex(INT, t, doc);
                idSeg.setAtIndex(INT, t, id);
                targets[t] = t + 1 < starts[i + 1] ? tokenIds[t + 1] : -1;
                targetSeg.setAtIndex(INT, t, targets[t]);
            }
        }
        System.arraycopy(starts, 0, seqStart, 0, sequences + 1);
        N = n;
        B = sequences;
        seqLen = uniform ? len : 0;
        if (viewN != N) {
            for (int l = 0; l < L; l++) layers[l].attn.views(N);
            dxV = dx.rows(0, N);
            viewN = N;
        }
    }

    /** Sets B sequences of T tokens each from tokens [B*T] (no allocation when B and T stay the same). */
    public void setBatch(int[] tokenIds, int batch, int T) {
        if (batch < 1 || batch > maxSeqs)
            throw new Moe4jException("batch: " + batch + " sequences, this transformer takes 1.." + maxSeqs);
        for (int i = 0; i <= batch; i++) uniformStarts[i] = i * T;
        setBatch(tokenIds, uniformStarts, batch);
    }


    // --------------------------------------------------------------------------------------------------- forward

    /** Runs the model on the batch and returns the total loss; details in {@link #stats()}. */
    public double forward() {
        if (N == 0) throw new Moe4jException("forward: no batch set");
        Embedding.forward(P, embOff, V, tokens, layers[0].x.segment(), 0, d, 0, N);
        double lbSum = 0, zSum = 0, ercSum = 0, epsSum = 0;
        LossWeights w = c.loss();
        for (int l = 0; l < L; l++) {
            Layer ly = layers[l];
            ly.attn.forward(ly.x.segment());
            ly.moe.forward(ly.attn.hres.segment(), layers[l + 1].x.segment());
            MoeBlock moe = ly.moe;
            Routing r = moe.routing;
            LbScope scope = c.routing().lbScope();
            stats.lb[l] = moe.router.loadBalanceLoss(r, scope);
            stats.z[l] = moe.router.zLoss(r);
            stats.kRouted[l] = r.kRouted();
            stats.drops[l] = r.dropCount();
            int min = Integer.MAX_VALUE, max = 0, sum = 0;
            for (int e = r.keptRouted.nextMember(0); e >= 0; e = r.keptRouted.nextMember(e + 1)) {
                min = Math.min(min, r.countBefore[e]);
                max = Math.max(max, r.countBefore[e]);
                sum += r.countBefore[e];
            }
            stats.loadMin[l] = sum == 0 ? 0 : (double) min / sum;
            stats.loadMax[l] = sum == 0 ? 0 : (double) max / sum;
            if (ercOn) {
                int n = 0;
                for (int e = r.keptRouted.nextMember(0); e >= 0; e = r.keptRouted.nextMember(e + 1)) moe.keptList[n++] = e;
                stats.erc[l] = moe.erc.forward(P, moe.wr, moe.w13, moe.keptList, n, ercRng);
                stats.ercEps[l] = moe.erc.epsMean();
            } else {
                stats.erc[l] = Double.NaN;
                stats.ercEps[l] = Double.NaN;
            }
            lbSum += stats.lb[l];
            zSum += stats.z[l];
            if (ercOn) {
                ercSum += stats.erc[l];
                epsSum += stats.ercEps[l];
            }
        }
        Tensor xL = layers[L].x;
        ops.rmsNorm(xL.segment(), 0, P, finalNormOff, xf.segment(), 0, rstdf.segment(), 0, d, eps, N);
        gemm.sgemm(false, true, N, V, d, 1f, xf.segment(), 0, d, P, lmOff, d, 0f, logits.segment(), 0, V);
        int labels = N - B;
        double ceSum = ops.crossEntropy(logits.segment(), targetSeg, lseV.segment(), V, N);
        double zOut = org.moe4j.simd.CrossEntropy.zLossSum(lseV.segment(), 0, targetSeg, 0, -1, 0, N);
        stats.tokens = N;
        stats.sequences = B;
        stats.labels = labels;
        stats.ce = labels == 0 ? 0 : ceSum / labels;
        stats.outZ = labels == 0 ? 0 : zOut / labels;
        stats.lbMean = lbSum / L;
        stats.zMean = zSum / L;
        stats.ercMean = ercOn ? ercSum / L : Double.NaN;
        stats.total = stats.ce + w.outputZ() * stats.outZ + w.lb() * stats.lbMean + w.routerZ() * stats.zMean
                + (ercOn ? w.erc() * stats.ercMean : 0);
        if (!Double.isFinite(stats.total)) throw new NonFiniteException(firstNonFinite());
        return stats.total;
    }

    // --------------------------------------------------------------------------------------------------- backward

    /** Adds d(total)/d(param) of the last forward into the model's gradients. Overwrites the logits. */
    public void backward() {
        LossWeights w = c.loss();
        int labels = N - B;
        float scale = labels == 0 ? 0f : 1f / labels;
        MemorySegment lg = logits.segment();
        ops.crossEntropyBackward(lg, targetSeg, lseV.segment(), scale, (float) w.outputZ(), V, N);
        gemm.sgemm(true, false, V, d, N, 1f, lg, 0, V, xf.segment(), 0, d, 1f, G, lmOff, d);
        gemm.sgemm(false, false, N, d, V, 1f, lg, 0, V, P, lmOff, d, 0f, tmp.segment(), 0, d);
        ops.rmsNormBackward(tmp.segment(), 0, layers[L].x.segment(), 0, P, finalNormOff, rstdf.segment(), 0,
                dx.segment(), 0, false, G, finalNormOff, d, N);
        for (int l = L - 1; l >= 0; l--) {
            layers[l].moe.backward(layers[l].attn.hres.segment(), w);
            layers[l].attn.backward(layers[l].x.segment());
        }
        // embedding: scatter-add over columns split across workers (repeated ids never race)
        embTask.dx = dx.segment();
        pool.parallelFor(d, embTask);
    }

    private final class EmbeddingGrad implements WorkerPool.RangeTask {
        MemorySegment dx;

        @Override
        public void run(int c0, int c1, int worker) {
            Embedding.backward(dx, 0, tokens, G, embOff, V, d, 0, N, c0, c1);
        }
    }

    private final EmbeddingGrad embTask = new EmbeddingGrad();

    // --------------------------------------------------------------------------------------------------- checks

    /** Names the first tensor, in forward order, that holds a NaN or infinity. */
    private String firstNonFinite() {
        long emb = VectorOps.firstNonFinite(P, embOff, (long) V * d);
        if (emb >= 0) return "non-finite loss: parameter " + ParamLayout.embedTokens() + " holds a non-finite value";
        for (int l = 0; l < L; l++) {
            Layer ly = layers[l];
            String at = scan(new Tensor[] {ly.x}, new String[] {"input"});
            if (at == null) at = ly.attn.firstNonFinite();
            if (at == null) at = ly.moe.firstNonFinite();
            if (at != null) return "non-finite loss: first at layer " + l + ", " + at;
        }
        long at = VectorOps.firstNonFinite(logits.segment(), 0, (long) N * V);
        if (at >= 0) return "non-finite loss: first in the LM head logits, row " + at / V;
        return "non-finite loss: ce = " + stats.ce + ", outZ = " + stats.outZ + ", lb = " + stats.lbMean + ", z = "
                + stats.zMean + ", erc = " + stats.ercMean + " (activations are finite; an aux loss overflowed)";
    }

    @Override
    public void close() {
        ws.close();
    }

    /** The subset helper: every layer routes only among {@code set} (shared experts always stay). */
    public void subset(int l, ExpertSet set) {
        controls[l].subset(set);
    }
}
