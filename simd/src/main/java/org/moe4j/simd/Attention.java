package org.moe4j.simd;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.util.Arrays;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;
import org.moe4j.Moe4jException;

/**
 * Causal multi-head attention with grouped KV heads and an optional document mask, forward and backward, tiled
 * with an online softmax (FlashAttention-2 style) on the Vector API.
 *
 * <p>Layout (rows are tokens of {@code B} packed sequences of {@code T} tokens, row {@code b*T + t}):
 * <pre>
 *   q, out, dq, dOut [B*T, H*Dh]     k, v, dk, dv [B*T, Hkv*Dh]     lse [B*T, H]     docIds int32 [B*T] or null
 * </pre>
 * Query head {@code h} reads KV head {@code h / (H/Hkv)}. With {@code s_ij = (q_i . k_j) / sqrt(Dh)}, query
 * {@code i} attends the keys {@code j <= i} of its own document:
 * <pre>
 *   out_i = sum_j p_ij v_j,   p_ij = exp(s_ij - lse_i),   lse_i = log sum_j exp(s_ij)   (allowed j only)
 * </pre>
 * A document is a run of equal doc ids inside one sequence (EOS-delimited segments are contiguous; an id that
 * reappears after another id starts a new document). Without doc ids every key {@code j <= i} is allowed.
 *
 * <p>Backward recomputes {@code p} from q, k and the saved {@code lse}: with {@code D_i = dOut_i . out_i} and
 * {@code ds_ij = p_ij (dOut_i . v_j - D_i)}: {@code dv_j = sum_i p_ij dOut_i}, {@code dq_i = sum_j ds_ij k_j / sqrt(Dh)},
 * {@code dk_j = sum_i ds_ij q_i / sqrt(Dh)}, dk and dv summed over the query heads sharing a KV head. All three
 * are overwritten, not accumulated into.
 *
 * <p>Work split: forward over (sequence, query head) units {@code u = b*H + h}; backward over (sequence, KV head)
 * units {@code u = b*Hkv + g}, so that each unit owns its dk/dv rows and nothing races. The range entries
 * ({@code forward(..., uStart, uEnd, worker)}) run units on the caller's thread with worker {@code worker}'s
 * scratch, for an engine that runs its own parallel loop; the pool entries split all units over
 * {@link WorkerPool}. Scratch for every worker is allocated in the constructor; calls allocate nothing.
 *
 * <p>Not thread-safe across calls: one Attention object serves one call at a time (the pool entries reuse one
 * task object), and two concurrent range calls must use different workers. Do not call the pool entries from
 * inside a pool task (a nested parallelFor runs inline as worker 0 and would share worker 0's scratch).
 */
public final class Attention {
    private static final VectorSpecies<Float> SPECIES = Simd.FLOAT;
    private static final int L = SPECIES.length();
    private static final ValueLayout.OfInt INT = ValueLayout.JAVA_INT_UNALIGNED;
    private static final ByteOrder NATIVE = ByteOrder.nativeOrder();
    /** Query rows per tile. */
    private static final int BR = 64;
    /** Keys per forward tile; a multiple of the vector length (wider tiles amortise the per-row softmax work). */
    private static final int FWD_BC = 128;
    /** Keys per backward tile (its P and dS tiles stay in L1 together). */
    private static final int BWD_BC = 64;
    /** The widest tile, for sizing scratch. */
    private static final int BC = Math.max(FWD_BC, BWD_BC);

    private final int maxT;
    private final int heads;
    private final int kvHeads;
    private final int headDim;
    private final int group;
    private final int threads;
    private final int dhPad;     // Dh rounded up to whole vectors; the padding columns stay 0
    private final int ktStride;  // row stride of the transposed K/V scratch [Dh, ktStride]
    private final float scale;
    private final Scratch[] scratch;
    private final ForwardTask forwardTask = new ForwardTask();
    private final BackwardTask backwardTask = new BackwardTask();

    /** Per-worker buffers (Java heap, allocated once). */
    private static final class Scratch {
        final float[] kt;  // [Dh, ktStride] K^T of one KV head
        final float[] vt;  // [Dh, ktStride] V^T (backward)
        final float[] ks;  // [rows, dhPad] K
        final float[] vs;  // [rows, dhPad] V
        final float[] qs;  // [rows, dhPad] q / sqrt(Dh) (forward: one query tile; backward: one head)
        final float[] dos; // [rows, dhPad] dOut of one head
        final float[] acc; // [rows, dhPad] forward: O accumulator of a tile; backward: dq of one head
        final float[] dk;  // [rows, dhPad]
        final float[] dv;  // [rows, dhPad]
        final float[] p;   // [BR, BC] scores, then probabilities
        final float[] ds;  // [BR, BC] dp, then ds
        final float[] m;   // [BR] running max
        final float[] l;   // [BR] running sum
        final float[] d;   // [rows] D = rowsum(dOut * out)
        final float[] lse; // [rows]
        final float[] row; // [dhPad]
        final int[] lo;    // [maxT] first key of each query's document
        final int[] gLo = new int[BR / 4];
        final int[] gHi = new int[BR / 4];
        final int[] gvS = new int[BR / 4];
        final int[] gvE = new int[BR / 4];
        int cachedKv = -1;
        int cachedLo = -1;

        Scratch(int maxT, int headDim, int dhPad, int ktStride) {
            int rows = maxT + BC;
            kt = new float[headDim * ktStride];
            vt = new float[headDim * ktStride];
            ks = new float[rows * dhPad];
            vs = new float[rows * dhPad];
            qs = new float[rows * dhPad];
            dos = new float[rows * dhPad];
            acc = new float[rows * dhPad];
            dk = new float[rows * dhPad];
            dv = new float[rows * dhPad];
            p = new float[BR * BC];
            ds = new float[BR * BC];
            m = new float[BR];
            l = new float[BR];
            d = new float[rows];
            lse = new float[rows];
            row = new float[dhPad];
            lo = new int[maxT];
        }
    }

    /**
     * Attention for sequences of up to {@code maxT} tokens, {@code heads} query heads and {@code kvHeads} KV heads
     * (dividing {@code heads}) of {@code headDim} values, run by up to {@code threads} workers.
     */
    public Attention(int maxT, int heads, int kvHeads, int headDim, int threads) {
        if (maxT < 1 || heads < 1 || kvHeads < 1 || headDim < 1 || threads < 1) {
            throw new Moe4jException("Attention: maxT, heads, kvHeads, headDim and threads must be >= 1, got maxT="
                    + maxT + " heads=" + heads + " kvHeads=" + kvHeads + " headDim=" + headDim + " threads=" + threads);
        }
        if (heads % kvHeads != 0) {
            throw new Moe4jException("Attention: heads " + heads + " is not a multiple of kvHeads " + kvHeads);
        }
        this.maxT = maxT;
        this.heads = heads;
        this.kvHeads = kvHeads;
        this.headDim = headDim;
        this.group = heads / kvHeads;
        this.threads = threads;
        this.dhPad = roundUp(headDim, L);
        this.ktStride = roundUp(maxT + BC, L);
        this.scale = (float) (1.0 / Math.sqrt(headDim));
        if ((long) (maxT + BC) * Math.max(dhPad, headDim) > Integer.MAX_VALUE / 2
                || (long) headDim * ktStride > Integer.MAX_VALUE / 2) {
            throw new Moe4jException("Attention: maxT " + maxT + " x headDim " + headDim + " is too large");
        }
        this.scratch = new Scratch[threads];
        for (int i = 0; i < threads; i++) {
            scratch[i] = new Scratch(maxT, headDim, dhPad, ktStride);
        }
    }

    public int maxT() {
        return maxT;
    }

    public int heads() {
        return heads;
    }

    public int kvHeads() {
        return kvHeads;
    }

    public int headDim() {
        return headDim;
    }

    public int threads() {
        return threads;
    }

    // ------------------------------------------------------------------------------------------------ forward

    /**
     * Forward over all {@code batch * heads} units on {@code pool}: q, k, v, docIds (nullable) -> out, lse.
     * Uses at most {@code min(threads(), pool.threads())} workers.
     */
    public void forward(Tensor q, Tensor k, Tensor v, MemorySegment docIds, Tensor out, Tensor lse,
                        int batch, int seqLen, WorkerPool pool) {
        checkForward(q, k, v, docIds, out, lse, batch, seqLen);
        ForwardTask t = forwardTask;
        t.set(q, k, v, docIds, out, lse, seqLen);
        try {
            pool.parallelFor(batch * heads, Math.min(threads, pool.threads()), t);
        } finally {
            t.clear();
        }
    }

    /**
     * Forward over units {@code [unitStart, unitEnd)} of {@code [0, batch*heads)}, unit {@code b*heads + h}, on
     * the calling thread with scratch {@code worker} (in {@code [0, threads())}).
     */
    public void forward(Tensor q, Tensor k, Tensor v, MemorySegment docIds, Tensor out, Tensor lse,
                        int batch, int seqLen, int unitStart, int unitEnd, int worker) {
        checkForward(q, k, v, docIds, out, lse, batch, seqLen);
        checkRange(unitStart, unitEnd, batch * heads, worker, "batch*heads");
        forwardUnits(q.segment(), k.segment(), v.segment(), docIds, out.segment(), lse.segment(), seqLen,
                unitStart, unitEnd, scratch[worker]);
    }

    private final class ForwardTask implements WorkerPool.RangeTask {
        MemorySegment q, k, v, doc, out, lse;
        int seqLen;

        void set(Tensor q, Tensor k, Tensor v, MemorySegment doc, Tensor out, Tensor lse, int seqLen) {
            this.q = q.segment();
            this.k = k.segment();
            this.v = v.segment();
            this.doc = doc;
            this.out = out.segment();
            this.lse = lse.segment();
            this.seqLen = seqLen;
        }

        void clear() {
            q = k = v = doc = out = lse = null;
        }

        @Override
        public void run(int start, int end, int worker) {
            forwardUnits(q, k, v, doc, out, lse, seqLen, start, end, scratch[worker]);
        }
    }

    private void forwardUnits(MemorySegment q, MemorySegment k, MemorySegment v, MemorySegment doc,
                              MemorySegment out, MemorySegment lse, int T, int uStart, int uEnd, Scratch s) {
        s.cachedKv = -1;
        s.cachedLo = -1;
        for (int u = uStart; u < uEnd; u++) {
            int b = u / heads;
            int h = u % heads;
            forwardHead(q, k, v, doc, out, lse, T, b, h, s);
        }
    }

    // one (sequence b, query head h): out rows [b*T, b*T+T), columns [h*Dh, h*Dh+Dh)
    private void forwardHead(MemorySegment q, MemorySegment k, MemorySegment v, MemorySegment doc,
                             MemorySegment out, MemorySegment lseSeg, int T, int b, int h, Scratch s) {
        final int dh = headDim;
        final int dp = dhPad;
        final int kvh = h / group;
        final int[] lo = s.lo;
        prepareLo(doc, T, b, s);
        if (s.cachedKv != b * kvHeads + kvh) {
            // kt [Dh, T] = K_head^T, vs [T, dhPad] = V_head
            long kvLd = (long) kvHeads * dh;
            for (int j = 0; j < T; j++) {
                long off = ((b * (long) T + j) * kvLd + (long) kvh * dh) * Float.BYTES;
                loadRow(k, off, s.ks, j * dp, dh, 1f);
                loadRow(v, off, s.vs, j * dp, dh, 1f);
            }
            transpose(s.ks, dp, T, dh, s.kt, ktStride);
            s.cachedKv = b * kvHeads + kvh;
        }
        final float[] qs = s.qs, acc = s.acc, p = s.p, m = s.m, l = s.l;
        final long qLd = (long) heads * dh;
        for (int i0 = 0; i0 < T; i0 += BR) {
            final int nq = Math.min(BR, T - i0);
            final int nqPad = roundUp(nq, 4);
            // qs [nqPad, dhPad] = q_tile / sqrt(Dh), padding rows 0
            for (int r = 0; r < nq; r++) {
                long off = ((b * (long) T + i0 + r) * qLd + (long) h * dh) * Float.BYTES;
                loadRow(q, off, qs, r * dp, dh, scale);
            }
            Arrays.fill(qs, nq * dp, nqPad * dp, 0f);
            Arrays.fill(acc, 0, nqPad * dp, 0f);
            Arrays.fill(m, Float.NEGATIVE_INFINITY);
            Arrays.fill(l, 0f);
            final int kEnd = i0 + nq;
            for (int j0 = lo[i0]; j0 < kEnd; j0 += FWD_BC) {
                final int w = Math.min(FWD_BC, kEnd - j0);
                // S tile: rows of group g need keys [gLo, gHi) of this block only (causal / document limits)
                tileRanges(s, lo, i0, nq, j0, w);
                for (int r = 0; r < nq; r += 4) {
                    int g = r >> 2;
                    if (s.gvE[g] > s.gvS[g]) {
                        mm4(qs, r * dp, dp, 1, s.kt, j0 + s.gvS[g], ktStride, dh,
                                p, r * FWD_BC + s.gvS[g], FWD_BC, (s.gvE[g] - s.gvS[g]) / L, false);
                    }
                }
                // online softmax, row by row
                for (int r = 0; r < nqPad; r++) {
                    int g = r >> 2;
                    int vS = s.gvS[g], vE = s.gvE[g];
                    if (vE <= vS) {
                        continue;
                    }
                    int rowOff = r * FWD_BC;
                    int i = i0 + r;
                    int a = r < nq ? Math.max(0, lo[i] - j0) : 0;
                    int e = r < nq ? Math.min(w, i - j0 + 1) : 0;
                    if (e <= a) {
                        Arrays.fill(p, rowOff + vS, rowOff + vE, 0f);
                        continue;
                    }
                    Arrays.fill(p, rowOff + vS, rowOff + a, Float.NEGATIVE_INFINITY);
                    Arrays.fill(p, rowOff + e, rowOff + vE, Float.NEGATIVE_INFINITY);
                    float mOld = m[r];
                    float mNew = Math.max(mOld, rowMax(p, rowOff + vS, rowOff + vE));
                    float alpha = mOld == mNew ? 1f : VectorMath.exp(mOld - mNew); // 0 when mOld = -inf
                    float sum = expSub(p, rowOff + vS, rowOff + vE, mNew);
                    l[r] = l[r] * alpha + sum;
                    m[r] = mNew;
                    if (alpha != 1f) {
                        scaleInPlace(acc, r * dp, r * dp + dp, alpha);
                    }
                }
                // acc [4, dhPad] += P [4, gHi-gLo] V [gHi-gLo, dhPad] per row group
                for (int r = 0; r < nq; r += 4) {
                    int g = r >> 2;
                    int jl = s.gLo[g], jh = s.gHi[g];
                    if (jh > jl) {
                        mm4(p, r * FWD_BC + jl, FWD_BC, 1, s.vs, (j0 + jl) * dp, dp, jh - jl,
                                acc, r * dp, dp, dp / L, true);
                    }
                }
            }
            // out = acc / l, lse = m + log l
            for (int r = 0; r < nq; r++) {
                long row = b * (long) T + i0 + r;
                storeRow(acc, r * dp, out, (row * qLd + (long) h * dh) * Float.BYTES, dh, 1f / l[r]);
                lseSeg.setAtIndex(Tensor.FLOAT, row * heads + h, m[r] + VectorMath.log(l[r]));
            }
        }
    }

    // ----------------------------------------------------------------------------------------------- backward

    /**
     * Backward over all {@code batch * kvHeads} units on {@code pool}: from q, k, v, docIds (nullable), the
     * forward's out and lse, and dOut, writes dq, dk, dv (overwritten).
     */
    public void backward(Tensor q, Tensor k, Tensor v, MemorySegment docIds, Tensor out, Tensor lse, Tensor dOut,
                         Tensor dq, Tensor dk, Tensor dv, int batch, int seqLen, WorkerPool pool) {
        checkBackward(q, k, v, docIds, out, lse, dOut, dq, dk, dv, batch, seqLen);
        BackwardTask t = backwardTask;
        t.set(q, k, v, docIds, out, lse, dOut, dq, dk, dv, seqLen);
        try {
            pool.parallelFor(batch * kvHeads, Math.min(threads, pool.threads()), t);
        } finally {
            t.clear();
        }
    }

    /**
     * Backward over units {@code [unitStart, unitEnd)} of {@code [0, batch*kvHeads)}, unit {@code b*kvHeads + g}
     * (all query heads of KV head g), on the calling thread with scratch {@code worker}.
     */
    public void backward(Tensor q, Tensor k, Tensor v, MemorySegment docIds, Tensor out, Tensor lse, Tensor dOut,
                         Tensor dq, Tensor dk, Tensor dv, int batch, int seqLen, int unitStart, int unitEnd,
                         int worker) {
        checkBackward(q, k, v, docIds, out, lse, dOut, dq, dk, dv, batch, seqLen);
        checkRange(unitStart, unitEnd, batch * kvHeads, worker, "batch*kvHeads");
        backwardUnits(q.segment(), k.segment(), v.segment(), docIds, out.segment(), lse.segment(), dOut.segment(),
                dq.segment(), dk.segment(), dv.segment(), seqLen, unitStart, unitEnd, scratch[worker]);
    }

    private final class BackwardTask implements WorkerPool.RangeTask {
        MemorySegment q, k, v, doc, out, lse, dOut, dq, dk, dv;
        int seqLen;

        void set(Tensor q, Tensor k, Tensor v, MemorySegment doc, Tensor out, Tensor lse, Tensor dOut,
                 Tensor dq, Tensor dk, Tensor dv, int seqLen) {
            this.q = q.segment();
            this.k = k.segment();
            this.v = v.segment();
            this.doc = doc;
            this.out = out.segment();
            this.lse = lse.segment();
            this.dOut = dOut.segment();
            this.dq = dq.segment();
            this.dk = dk.segment();
            this.dv = dv.segment();
            this.seqLen = seqLen;
        }

        void clear() {
            q = k = v = doc = out = lse = dOut = dq = dk = dv = null;
        }

        @Override
        public void run(int start, int end, int worker) {
            backwardUnits(q, k, v, doc, out, lse, dOut, dq, dk, dv, seqLen, start, end, scratch[worker]);
        }
    }

    private void backwardUnits(MemorySegment q, MemorySegment k, MemorySegment v, MemorySegment doc,
                               MemorySegment out, MemorySegment lse, MemorySegment dOut, MemorySegment dq,
                               MemorySegment dk, MemorySegment dv, int T, int uStart, int uEnd, Scratch s) {
        s.cachedKv = -1;
        s.cachedLo = -1;
        for (int u = uStart; u < uEnd; u++) {
            backwardKvHead(q, k, v, doc, out, lse, dOut, dq, dk, dv, T, u / kvHeads, u % kvHeads, s);
        }
    }

    // one (sequence b, KV head kvh) and all its query heads
    private void backwardKvHead(MemorySegment q, MemorySegment k, MemorySegment v, MemorySegment doc,
                                MemorySegment out, MemorySegment lseSeg, MemorySegment dOut, MemorySegment dqSeg,
                                MemorySegment dkSeg, MemorySegment dvSeg, int T, int b, int kvh, Scratch s) {
        final int dh = headDim;
        final int dp = dhPad;
        final int[] lo = s.lo;
        final float[] qs = s.qs, dos = s.dos, dq = s.acc, dk = s.dk, dv = s.dv, p = s.p, ds = s.ds;
        final int tPad = roundUp(T, 4);
        prepareLo(doc, T, b, s);
        // ks [T, dhPad] = K_head, kt/vt [Dh, T] = K_head^T / V_head^T
        final long kvLd = (long) kvHeads * dh;
        for (int j = 0; j < T; j++) {
            long off = ((b * (long) T + j) * kvLd + (long) kvh * dh) * Float.BYTES;
            loadRow(k, off, s.ks, j * dp, dh, 1f);
            loadRow(v, off, s.vs, j * dp, dh, 1f);
        }
        transpose(s.ks, dp, T, dh, s.kt, ktStride);
        transpose(s.vs, dp, T, dh, s.vt, ktStride);
        // dk/dv rows are written up to 3 past T by the 4-key groups
        Arrays.fill(dk, 0, (tPad + 4) * dp, 0f);
        Arrays.fill(dv, 0, (tPad + 4) * dp, 0f);
        final long qLd = (long) heads * dh;
        for (int h = kvh * group; h < (kvh + 1) * group; h++) {
            // qs = q_head / sqrt(Dh), dos = dOut_head, D_i = dOut_i . out_i, lse_i
            for (int i = 0; i < T; i++) {
                long row = b * (long) T + i;
                long off = (row * qLd + (long) h * dh) * Float.BYTES;
                loadRow(q, off, qs, i * dp, dh, scale);
                loadRow(dOut, off, dos, i * dp, dh, 1f);
                loadRow(out, off, s.row, 0, dh, 1f);
                s.d[i] = dot(dos, i * dp, s.row, 0, dp);
                s.lse[i] = lseSeg.getAtIndex(Tensor.FLOAT, row * heads + h);
            }
            Arrays.fill(qs, T * dp, tPad * dp, 0f);
            Arrays.fill(dos, T * dp, tPad * dp, 0f);
            Arrays.fill(dq, 0, tPad * dp, 0f);
            for (int i0 = 0; i0 < T; i0 += BR) {
                final int nq = Math.min(BR, T - i0);
                final int nqPad = roundUp(nq, 4);
                final int kEnd = i0 + nq;
                for (int j0 = lo[i0]; j0 < kEnd; j0 += BWD_BC) {
                    final int w = Math.min(BWD_BC, kEnd - j0);
                    tileRanges(s, lo, i0, nq, j0, w);
                    // S = Qs K^T and dP = dO V^T on each row group's key range
                    for (int r = 0; r < nq; r += 4) {
                        int g = r >> 2;
                        if (s.gvE[g] > s.gvS[g]) {
                            int nv = (s.gvE[g] - s.gvS[g]) / L;
                            mm4(qs, (i0 + r) * dp, dp, 1, s.kt, j0 + s.gvS[g], ktStride, dh,
                                    p, r * BWD_BC + s.gvS[g], BWD_BC, nv, false);
                            mm4(dos, (i0 + r) * dp, dp, 1, s.vt, j0 + s.gvS[g], ktStride, dh,
                                    ds, r * BWD_BC + s.gvS[g], BWD_BC, nv, false);
                        }
                    }
                    // P = exp(S - lse) (0 where masked), dS = P (dP - D); every other entry of the tile 0
                    for (int r = 0; r < nqPad; r++) {
                        int g = r >> 2;
                        int vS = s.gvS[g], vE = s.gvE[g];
                        int rowOff = r * BWD_BC;
                        int i = i0 + r;
                        int a = r < nq ? Math.max(0, lo[i] - j0) : 0;
                        int e = r < nq ? Math.min(w, i - j0 + 1) : 0;
                        if (vE <= vS || e <= a) {
                            Arrays.fill(p, rowOff, rowOff + BWD_BC, 0f);
                            Arrays.fill(ds, rowOff, rowOff + BWD_BC, 0f);
                            continue;
                        }
                        Arrays.fill(p, rowOff, rowOff + vS, 0f);
                        Arrays.fill(p, rowOff + vE, rowOff + BWD_BC, 0f);
                        Arrays.fill(ds, rowOff, rowOff + vS, 0f);
                        Arrays.fill(ds, rowOff + vE, rowOff + BWD_BC, 0f);
                        Arrays.fill(p, rowOff + vS, rowOff + a, Float.NEGATIVE_INFINITY);
                        Arrays.fill(p, rowOff + e, rowOff + vE, Float.NEGATIVE_INFINITY);
                        expSub(p, rowOff + vS, rowOff + vE, s.lse[i]);
                        dsInPlace(ds, p, rowOff + vS, rowOff + vE, s.d[i]);
                    }
                    // dv [4 keys, dhPad] += P^T dO ; dk += dS^T Qs (rows i < j contribute 0 and are skipped)
                    for (int kg = 0; kg < w; kg += 4) {
                        int rStart = Math.max(0, j0 + kg - i0);
                        if (rStart >= nq) {
                            break;
                        }
                        mm4(p, rStart * BWD_BC + kg, 1, BWD_BC, dos, (i0 + rStart) * dp, dp, nq - rStart,
                                dv, (j0 + kg) * dp, dp, dp / L, true);
                        mm4(ds, rStart * BWD_BC + kg, 1, BWD_BC, qs, (i0 + rStart) * dp, dp, nq - rStart,
                                dk, (j0 + kg) * dp, dp, dp / L, true);
                    }
                    // dq [4, dhPad] += dS [4, gHi-gLo] K [gHi-gLo, dhPad]
                    for (int r = 0; r < nq; r += 4) {
                        int g = r >> 2;
                        int jl = s.gLo[g], jh = s.gHi[g];
                        if (jh > jl) {
                            mm4(ds, r * BWD_BC + jl, BWD_BC, 1, s.ks, (j0 + jl) * dp, dp, jh - jl,
                                    dq, (i0 + r) * dp, dp, dp / L, true);
                        }
                    }
                }
            }
            // dq_head = (dS K) / sqrt(Dh)
            for (int i = 0; i < T; i++) {
                long off = ((b * (long) T + i) * qLd + (long) h * dh) * Float.BYTES;
                storeRow(dq, i * dp, dqSeg, off, dh, scale);
            }
        }
        for (int j = 0; j < T; j++) {
            long off = ((b * (long) T + j) * kvLd + (long) kvh * dh) * Float.BYTES;
            storeRow(dk, j * dp, dkSeg, off, dh, 1f);
            storeRow(dv, j * dp, dvSeg, off, dh, 1f);
        }
    }

    // ---------------------------------------------------------------------------------------------- tile plan

    // lo[t] = first position of t's document run in sequence b (0 without doc ids)
    private static void prepareLo(MemorySegment doc, int T, int b, Scratch s) {
        if (s.cachedLo == b) {
            return;
        }
        int[] lo = s.lo;
        if (doc == null) {
            Arrays.fill(lo, 0, T, 0);
        } else {
            long base = (long) b * T;
            int prev = doc.getAtIndex(INT, base);
            lo[0] = 0;
            for (int t = 1; t < T; t++) {
                int id = doc.getAtIndex(INT, base + t);
                lo[t] = id == prev ? lo[t - 1] : t;
                prev = id;
            }
        }
        s.cachedLo = b;
    }

    // For each group of 4 query rows [i0+r, i0+r+4) and the key block [j0, j0+w): the keys any of its rows may
    // attend, [gLo, gHi) (relative to j0; lo is non-decreasing, so row i0+r has the smallest), and that range
    // widened to whole vectors, [gvS, gvE); empty when the group attends nothing here.
    private static void tileRanges(Scratch s, int[] lo, int i0, int nq, int j0, int w) {
        for (int r = 0; r < nq; r += 4) {
            int g = r >> 2;
            int iLast = i0 + Math.min(r + 3, nq - 1);
            int jl = Math.max(0, lo[i0 + r] - j0);
            int jh = Math.min(w, iLast - j0 + 1);
            if (jh <= jl) {
                s.gLo[g] = s.gHi[g] = s.gvS[g] = s.gvE[g] = 0;
            } else {
                s.gLo[g] = jl;
                s.gHi[g] = jh;
                s.gvS[g] = (jl / L) * L;
                s.gvE[g] = roundUp(jh, L);
            }
        }
        for (int g = (nq + 3) >> 2; g < BR / 4; g++) {
            s.gLo[g] = s.gHi[g] = s.gvS[g] = s.gvE[g] = 0;
        }
    }

    // --------------------------------------------------------------------------------------------- micro-kernels

    // c[cOff + r*ldc + 0:nv*L] (+)= sum_{p<k} a[aOff + r*aRs + p*aCs] * b[bOff + p*ldb + 0:nv*L], r = 0..3
    // (a is read by element, so strides (aRs, aCs) = (BC, 1) use a tile as is and (1, BC) its transpose)
    private static void mm4(float[] a, int aOff, int aRs, int aCs, float[] b, int bOff, int ldb, int k,
                            float[] c, int cOff, int ldc, int nv, boolean accumulate) {
        int v = 0;
        for (; v + 4 <= nv; v += 4) {
            mm4x4(a, aOff, aRs, aCs, b, bOff + v * L, ldb, k, c, cOff + v * L, ldc, accumulate);
        }
        if (v + 2 <= nv) {
            mm4x2(a, aOff, aRs, aCs, b, bOff + v * L, ldb, k, c, cOff + v * L, ldc, accumulate);
            v += 2;
        }
        if (v < nv) {
            mm4x1(a, aOff, aRs, aCs, b, bOff + v * L, ldb, k, c, cOff + v * L, ldc, accumulate);
        }
    }

    // 4 rows x 4 vectors of accumulators
    private static void mm4x4(float[] a, int aOff, int aRs, int aCs, float[] b, int bOff, int ldb, int k,
                              float[] c, int cOff, int ldc, boolean accumulate) {
        final int c0 = cOff, c1 = cOff + ldc, c2 = cOff + 2 * ldc, c3 = cOff + 3 * ldc;
        FloatVector z = FloatVector.zero(SPECIES);
        FloatVector s00 = accumulate ? FloatVector.fromArray(SPECIES, c, c0) : z;
        FloatVector s01 = accumulate ? FloatVector.fromArray(SPECIES, c, c0 + L) : z;
        FloatVector s02 = accumulate ? FloatVector.fromArray(SPECIES, c, c0 + 2 * L) : z;
        FloatVector s03 = accumulate ? FloatVector.fromArray(SPECIES, c, c0 + 3 * L) : z;
        FloatVector s10 = accumulate ? FloatVector.fromArray(SPECIES, c, c1) : z;
        FloatVector s11 = accumulate ? FloatVector.fromArray(SPECIES, c, c1 + L) : z;
        FloatVector s12 = accumulate ? FloatVector.fromArray(SPECIES, c, c1 + 2 * L) : z;
        FloatVector s13 = accumulate ? FloatVector.fromArray(SPECIES, c, c1 + 3 * L) : z;
        FloatVector s20 = accumulate ? FloatVector.fromArray(SPECIES, c, c2) : z;
        FloatVector s21 = accumulate ? FloatVector.fromArray(SPECIES, c, c2 + L) : z;
        FloatVector s22 = accumulate ? FloatVector.fromArray(SPECIES, c, c2 + 2 * L) : z;
        FloatVector s23 = accumulate ? FloatVector.fromArray(SPECIES, c, c2 + 3 * L) : z;
        FloatVector s30 = accumulate ? FloatVector.fromArray(SPECIES, c, c3) : z;
        FloatVector s31 = accumulate ? FloatVector.fromArray(SPECIES, c, c3 + L) : z;
        FloatVector s32 = accumulate ? FloatVector.fromArray(SPECIES, c, c3 + 2 * L) : z;
        FloatVector s33 = accumulate ? FloatVector.fromArray(SPECIES, c, c3 + 3 * L) : z;
        for (int p = 0; p < k; p++) {
            int ap = aOff + p * aCs;
            int bp = bOff + p * ldb;
            FloatVector b0 = FloatVector.fromArray(SPECIES, b, bp);
            FloatVector b1 = FloatVector.fromArray(SPECIES, b, bp + L);
            FloatVector b2 = FloatVector.fromArray(SPECIES, b, bp + 2 * L);
            FloatVector b3 = FloatVector.fromArray(SPECIES, b, bp + 3 * L);
            FloatVector a0 = FloatVector.broadcast(SPECIES, a[ap]);
            s00 = b0.fma(a0, s00);
            s01 = b1.fma(a0, s01);
            s02 = b2.fma(a0, s02);
            s03 = b3.fma(a0, s03);
            FloatVector a1 = FloatVector.broadcast(SPECIES, a[ap + aRs]);
            s10 = b0.fma(a1, s10);
            s11 = b1.fma(a1, s11);
            s12 = b2.fma(a1, s12);
            s13 = b3.fma(a1, s13);
            FloatVector a2 = FloatVector.broadcast(SPECIES, a[ap + 2 * aRs]);
            s20 = b0.fma(a2, s20);
            s21 = b1.fma(a2, s21);
            s22 = b2.fma(a2, s22);
            s23 = b3.fma(a2, s23);
            FloatVector a3 = FloatVector.broadcast(SPECIES, a[ap + 3 * aRs]);
            s30 = b0.fma(a3, s30);
            s31 = b1.fma(a3, s31);
            s32 = b2.fma(a3, s32);
            s33 = b3.fma(a3, s33);
        }
        s00.intoArray(c, c0);
        s01.intoArray(c, c0 + L);
        s02.intoArray(c, c0 + 2 * L);
        s03.intoArray(c, c0 + 3 * L);
        s10.intoArray(c, c1);
        s11.intoArray(c, c1 + L);
        s12.intoArray(c, c1 + 2 * L);
        s13.intoArray(c, c1 + 3 * L);
        s20.intoArray(c, c2);
        s21.intoArray(c, c2 + L);
        s22.intoArray(c, c2 + 2 * L);
        s23.intoArray(c, c2 + 3 * L);
        s30.intoArray(c, c3);
        s31.intoArray(c, c3 + L);
        s32.intoArray(c, c3 + 2 * L);
        s33.intoArray(c, c3 + 3 * L);
    }

    // 4 rows x 2 vectors of accumulators (diagonal tiles, head-dim tails)
    private static void mm4x2(float[] a, int aOff, int aRs, int aCs, float[] b, int bOff, int ldb, int k,
                              float[] c, int cOff, int ldc, boolean accumulate) {
        final int c0 = cOff, c1 = cOff + ldc, c2 = cOff + 2 * ldc, c3 = cOff + 3 * ldc;
        FloatVector z = FloatVector.zero(SPECIES);
        FloatVector s00 = accumulate ? FloatVector.fromArray(SPECIES, c, c0) : z;
        FloatVector s01 = accumulate ? FloatVector.fromArray(SPECIES, c, c0 + L) : z;
        FloatVector s10 = accumulate ? FloatVector.fromArray(SPECIES, c, c1) : z;
        FloatVector s11 = accumulate ? FloatVector.fromArray(SPECIES, c, c1 + L) : z;
        FloatVector s20 = accumulate ? FloatVector.fromArray(SPECIES, c, c2) : z;
        FloatVector s21 = accumulate ? FloatVector.fromArray(SPECIES, c, c2 + L) : z;
        FloatVector s30 = accumulate ? FloatVector.fromArray(SPECIES, c, c3) : z;
        FloatVector s31 = accumulate ? FloatVector.fromArray(SPECIES, c, c3 + L) : z;
        for (int p = 0; p < k; p++) {
            int ap = aOff + p * aCs;
            int bp = bOff + p * ldb;
            FloatVector b0 = FloatVector.fromArray(SPECIES, b, bp);
            FloatVector b1 = FloatVector.fromArray(SPECIES, b, bp + L);
            FloatVector a0 = FloatVector.broadcast(SPECIES, a[ap]);
            s00 = b0.fma(a0, s00);
            s01 = b1.fma(a0, s01);
            FloatVector a1 = FloatVector.broadcast(SPECIES, a[ap + aRs]);
            s10 = b0.fma(a1, s10);
            s11 = b1.fma(a1, s11);
            FloatVector a2 = FloatVector.broadcast(SPECIES, a[ap + 2 * aRs]);
            s20 = b0.fma(a2, s20);
            s21 = b1.fma(a2, s21);
            FloatVector a3 = FloatVector.broadcast(SPECIES, a[ap + 3 * aRs]);
            s30 = b0.fma(a3, s30);
            s31 = b1.fma(a3, s31);
        }
        s00.intoArray(c, c0);
        s01.intoArray(c, c0 + L);
        s10.intoArray(c, c1);
        s11.intoArray(c, c1 + L);
        s20.intoArray(c, c2);
        s21.intoArray(c, c2 + L);
        s30.intoArray(c, c3);
        s31.intoArray(c, c3 + L);
    }

    // 4 rows x 1 vector of accumulators
    private static void mm4x1(float[] a, int aOff, int aRs, int aCs, float[] b, int bOff, int ldb, int k,
                              float[] c, int cOff, int ldc, boolean accumulate) {
        final int c0 = cOff, c1 = cOff + ldc, c2 = cOff + 2 * ldc, c3 = cOff + 3 * ldc;
        FloatVector z = FloatVector.zero(SPECIES);
        FloatVector s0 = accumulate ? FloatVector.fromArray(SPECIES, c, c0) : z;
        FloatVector s1 = accumulate ? FloatVector.fromArray(SPECIES, c, c1) : z;
        FloatVector s2 = accumulate ? FloatVector.fromArray(SPECIES, c, c2) : z;
        FloatVector s3 = accumulate ? FloatVector.fromArray(SPECIES, c, c3) : z;
        for (int p = 0; p < k; p++) {
            int ap = aOff + p * aCs;
            FloatVector b0 = FloatVector.fromArray(SPECIES, b, bOff + p * ldb);
            s0 = b0.fma(FloatVector.broadcast(SPECIES, a[ap]), s0);
            s1 = b0.fma(FloatVector.broadcast(SPECIES, a[ap + aRs]), s1);
            s2 = b0.fma(FloatVector.broadcast(SPECIES, a[ap + 2 * aRs]), s2);
            s3 = b0.fma(FloatVector.broadcast(SPECIES, a[ap + 3 * aRs]), s3);
        }
        s0.intoArray(c, c0);
        s1.intoArray(c, c1);
        s2.intoArray(c, c2);
        s3.intoArray(c, c3);
    }

    // dst[dOff + 0:n] = f * src[byteOff + 0:n floats]
    private static void loadRow(MemorySegment src, long byteOff, float[] dst, int dOff, int n, float f) {
        int i = 0;
        for (int bound = SPECIES.loopBound(n); i < bound; i += L) {
            FloatVector.fromMemorySegment(SPECIES, src, byteOff + (long) i * Float.BYTES, NATIVE).mul(f)
                    .intoArray(dst, dOff + i);
        }
        for (; i < n; i++) {
            dst[dOff + i] = f * src.get(Tensor.FLOAT, byteOff + (long) i * Float.BYTES);
        }
    }

    // dst[byteOff + 0:n floats] = f * src[sOff + 0:n]
    private static void storeRow(float[] src, int sOff, MemorySegment dst, long byteOff, int n, float f) {
        int i = 0;
        for (int bound = SPECIES.loopBound(n); i < bound; i += L) {
            FloatVector.fromArray(SPECIES, src, sOff + i).mul(f)
                    .intoMemorySegment(dst, byteOff + (long) i * Float.BYTES, NATIVE);
        }
        for (; i < n; i++) {
            dst.set(Tensor.FLOAT, byteOff + (long) i * Float.BYTES, f * src[sOff + i]);
        }
    }

    // dst [dh, ldDst] = src [T, ldSrc]^T (first dh columns), in blocks of 16 rows so that both sides stay in L1
    private static void transpose(float[] src, int ldSrc, int T, int dh, float[] dst, int ldDst) {
        for (int j0 = 0; j0 < T; j0 += 16) {
            int jn = Math.min(16, T - j0);
            for (int d = 0; d < dh; d++) {
                int o = d * ldDst + j0;
                int in = j0 * ldSrc + d;
                for (int jj = 0; jj < jn; jj++) {
                    dst[o + jj] = src[in + jj * ldSrc];
                }
            }
        }
    }

    // max of x[from, to) (whole vectors)
    private static float rowMax(float[] x, int from, int to) {
        FloatVector mx = FloatVector.broadcast(SPECIES, Float.NEGATIVE_INFINITY);
        for (int i = from; i < to; i += L) {
            mx = mx.max(FloatVector.fromArray(SPECIES, x, i));
        }
        return mx.reduceLanes(VectorOperators.MAX);
    }

    // x[i] = exp(x[i] - m) over [from, to) (whole vectors), -inf -> 0; returns the sum. The one exp of every
    // kernel (VectorMath): exactly rounded operations only, so the bits do not depend on JIT state.
    private static float expSub(float[] x, int from, int to, float m) {
        return VectorMath.expSubInPlace(x, from, to, m);
    }

    // ds[i] = p[i] * (ds[i] - d) over [from, to) (whole vectors)
    private static void dsInPlace(float[] ds, float[] p, int from, int to, float d) {
        for (int i = from; i < to; i += L) {
            FloatVector dpv = FloatVector.fromArray(SPECIES, ds, i);
            FloatVector.fromArray(SPECIES, p, i).mul(dpv.sub(d)).intoArray(ds, i);
        }
    }

    // x[from, to) *= f (whole vectors)
    private static void scaleInPlace(float[] x, int from, int to, float f) {
        for (int i = from; i < to; i += L) {
            FloatVector.fromArray(SPECIES, x, i).mul(f).intoArray(x, i);
        }
    }

    // sum x[xOff + 0:n] * y[yOff + 0:n] (n whole vectors)
    private static float dot(float[] x, int xOff, float[] y, int yOff, int n) {
        FloatVector acc = FloatVector.zero(SPECIES);
        for (int i = 0; i < n; i += L) {
            acc = FloatVector.fromArray(SPECIES, x, xOff + i).fma(FloatVector.fromArray(SPECIES, y, yOff + i), acc);
        }
        return VectorMath.sum(acc);
    }

    private static int roundUp(int x, int m) {
        return (x + m - 1) / m * m;
    }

    // ------------------------------------------------------------------------------------------------- checks

    private void checkForward(Tensor q, Tensor k, Tensor v, MemorySegment doc, Tensor out, Tensor lse,
                              int batch, int seqLen) {
        checkSizes(batch, seqLen);
        int rows = batch * seqLen;
        checkShape("q", q, rows, heads * headDim);
        checkShape("k", k, rows, kvHeads * headDim);
        checkShape("v", v, rows, kvHeads * headDim);
        checkShape("out", out, rows, heads * headDim);
        checkShape("lse", lse, rows, heads);
        checkDoc(doc, rows);
    }

    private void checkBackward(Tensor q, Tensor k, Tensor v, MemorySegment doc, Tensor out, Tensor lse, Tensor dOut,
                               Tensor dq, Tensor dk, Tensor dv, int batch, int seqLen) {
        checkForward(q, k, v, doc, out, lse, batch, seqLen);
        int rows = batch * seqLen;
        checkShape("dOut", dOut, rows, heads * headDim);
        checkShape("dq", dq, rows, heads * headDim);
        checkShape("dk", dk, rows, kvHeads * headDim);
        checkShape("dv", dv, rows, kvHeads * headDim);
    }

    private void checkSizes(int batch, int seqLen) {
        if (batch < 0 || seqLen < 1 || seqLen > maxT) {
            throw new Moe4jException("Attention: batch " + batch + " must be >= 0 and seqLen " + seqLen
                    + " in [1, maxT=" + maxT + "]");
        }
    }

    private static void checkShape(String name, Tensor t, int rows, int cols) {
        if (t.dtype() != DType.F32 || t.rank() != 2 || t.dim(0) != rows || t.dim(1) != cols) {
            throw new Moe4jException("Attention: " + name + " is " + t + ", expected F32[" + rows + ", " + cols + "]");
        }
    }

    private static void checkDoc(MemorySegment doc, int rows) {
        if (doc != null && doc.byteSize() < (long) rows * Integer.BYTES) {
            throw new Moe4jException("Attention: docIds has " + doc.byteSize() / Integer.BYTES
                    + " int32 ids, expected at least B*T = " + rows);
        }
    }

    private void checkRange(int start, int end, int units, int worker, String what) {
        if (start < 0 || end > units || start > end) {
            throw new Moe4jException("Attention: unit range [" + start + ", " + end + ") outside [0, " + what + "="
                    + units + ")");
        }
        if (worker < 0 || worker >= threads) {
            throw new Moe4jException("Attention: worker " + worker + " outside [0, threads=" + threads + ")");
        }
    }
}
