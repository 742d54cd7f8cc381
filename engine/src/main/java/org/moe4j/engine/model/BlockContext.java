package org.moe4j.engine.model;

import java.lang.foreign.MemorySegment;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.simd.Attention;
import org.moe4j.simd.CachedAttention;
import org.moe4j.simd.Gemm;
import org.moe4j.simd.Rope;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.VectorOps;
import org.moe4j.simd.WeightGemm;
import org.moe4j.simd.WorkerPool;
import org.moe4j.simd.Workspace;

/**
 * What every layer block of one model runner shares: the config and its sizes, the weights (and, for training,
 * the gradient buffer), the kernels (GEMM, row ops, attention, RoPE), the current {@link Batch}, and the backward
 * scratch. One block runs at a time, so they share all of it. A training runner ({@link MoeTransformer}) computes
 * every weight product with {@code gemm}; an inference runner passes a {@link WeightGemm}, which streams weights
 * for few rows and reads BF16 matrices.
 */
final class BlockContext {
    final ModelConfig c;
    final int d, V, L, H, Hkv, dh, qw, kw, E, shared, routed, hid, maxN, maxSeqs, kTotMax;
    final float eps;
    final ModelWeights weights;
    /** The F32 store (norms, routers; all parameters in training) and, in training, the gradients (same offsets). */
    final MemorySegment P, G;
    final Gemm gemm;
    final WeightGemm weightGemm;
    final WorkerPool pool;
    final RowOps ops;
    final Attention attention;
    final CachedAttention cachedAttention;
    final Rope rope;
    final Batch batch;
    final Workspace ws;
    boolean docMask;
    /** Runs the MoE blocks' experts: here, or (expert parallel) on the ranks owning them. */
    ExpertExecutor experts = ExpertExecutor.LOCAL;
    /** Names the first non-finite activation of the runner's last forward (set by the runner). */
    java.util.function.Supplier<String> nonFiniteReport = () -> "non-finite value in the forward pass";
    /** Backward scratch (training only; null for a forward-only runner). */
    final Tensor dx, tmp, datt, dq, dk, dv, dye, dact, dlogR;
    final float[] dGate, dLogits;

    BlockContext(ModelConfig c, ModelWeights weights, MemorySegment grads, int maxTokens, int maxSequences,
                 int maxRoutedK, Gemm gemm, WeightGemm weightGemm, WorkerPool pool, Workspace ws, boolean training) {
        this.c = c;
        this.weights = weights;
        this.P = weights.vectors();
        this.G = grads;
        this.gemm = gemm;
        this.weightGemm = weightGemm;
        this.pool = pool;
        this.ws = ws;
        maxN = maxTokens;
        maxSeqs = maxSequences;
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
        batch = new Batch(c, maxTokens, maxSequences, ws.arena());
        ops = new RowOps(pool, Math.max(Math.max(d, qw), kw), maxTokens, ws.arena());
        attention = new Attention(c.maxSeq(), H, Hkv, dh, pool.threads());
        cachedAttention = training ? null : new CachedAttention(c.maxSeq(), H, Hkv, dh, pool.threads());
        rope = new Rope(Math.max(c.maxSeq(), 2), dh, c.ropeTheta() > 1 ? c.ropeTheta() : 10000.0);
        int slots = slots();
        if (training) {
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
        } else {
            dx = tmp = datt = dq = dk = dv = dye = dact = dlogR = null;
            dGate = dLogits = null;
        }
    }

    /** Routed-slot rows the expert buffers hold: maxTokens x (k' + s). */
    int slots() {
        return maxN * Math.max(kTotMax, 1);
    }

    boolean training() {
        return G != null;
    }

    /**
     * out[M, N] = x[M, K] · Wᵀ + beta·out for a matrix W [N, K] at element offset {@code wOff} of the matrix store:
     * the training GEMM, or (inference) the weight-streaming kernel in the store's precision.
     */
    void linear(int M, int N, int K, MemorySegment x, long xOff, int ldx, long wOff, float beta, MemorySegment out,
                long oOff, int ldo) {
        MemorySegment w = weights.matrices();
        if (weightGemm == null) gemm.sgemm(false, true, M, N, K, 1f, x, xOff, ldx, w, wOff, K, beta, out, oOff, ldo);
        else if (weights.bf16()) weightGemm.bf16(M, N, K, x, xOff, ldx, w, wOff, K, beta, out, oOff, ldo);
        else weightGemm.f32(M, N, K, x, xOff, ldx, w, wOff, K, beta, out, oOff, ldo);
    }

    /** As {@link #linear} for a matrix of the F32 store (the router). */
    void linearF32(int M, int N, int K, MemorySegment x, long xOff, int ldx, long wOff, float beta, MemorySegment out,
                   long oOff, int ldo) {
        if (weightGemm == null) gemm.sgemm(false, true, M, N, K, 1f, x, xOff, ldx, P, wOff, K, beta, out, oOff, ldo);
        else weightGemm.f32(M, N, K, x, xOff, ldx, P, wOff, K, beta, out, oOff, ldo);
    }

    /** The first non-finite value among the first N rows of the tensors, in order, as text; null if none. */
    String scan(Tensor[] ts, String[] names) {
        int n = batch.N;
        for (int i = 0; i < ts.length; i++) {
            int width = ts[i].dim(1);
            long at = VectorOps.firstNonFinite(ts[i].segment(), 0, (long) n * width);
            if (at >= 0) return "tensor '" + names[i] + "' row " + at / width + ", column " + at % width;
        }
        return null;
    }
}
