package org.moe4j.simd;

import static org.moe4j.simd.VectorMath.F;
import static org.moe4j.simd.VectorMath.L;
import static org.moe4j.simd.VectorMath.NATIVE;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.concurrent.atomic.AtomicBoolean;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorShuffle;
import jdk.incubator.vector.VectorSpecies;
import org.moe4j.Moe4jException;

/**
 * out[M, N] = x[M, K] · W[N, K]ᵀ + beta·out, W row-major F32 or BF16 (row stride ldw >= K) — a linear layer's
 * forward.
 *
 * <p>Decoding multiplies a few activation rows by every weight matrix, so the time is the time to read W once
 * (the bound is bytes of W ÷ read bandwidth). For M <= {@link #smallRows()} a weight-streaming kernel reads each
 * weight element exactly once per call: N is split across the pool in blocks of {@value #WR} weight rows, and for
 * each block the M activation rows go through in groups of 4, 2, 1 (BF16: 2, 1) with one vector accumulator per (activation
 * row, weight row) pair, vectorised along K. Only the first group reads the block from memory; the others find it
 * in L1/L2. BF16 weights are widened in registers, never written out as F32: one load of L int lanes holds 2L
 * bf16 values, and {@code lane << 16} and {@code lane & 0xFFFF0000} are the two halves as floats (one ALU op per L
 * weights, half of sign-extending shorts to ints and shifting them); the activations are reordered once per call to
 * match (the elements paired with the low halves first in every 2L block).
 *
 * <p>Larger M is compute-bound: F32 goes to {@code big.sgemm(false, true, ...)}; BF16 goes to the mixed-precision
 * GEMM of {@link #manyRowsBf16} when one is set (activations rounded to bf16), else is dequantised chunk by chunk of
 * weight rows into a scratch allocated on the first such call (sized from maxK) and each chunk goes to {@code big}.
 *
 * <p>Bits: every output element is one accumulator chain over p = 0, L, 2L... (fused multiply-add; BF16: per 2L
 * block the low-half products, then the high-half products, on the same chain), then the lanes
 * summed in the fixed order of {@link VectorMath#sum}, then the scalar tail p >= loopBound(K) with fused
 * multiply-adds, then beta. Which kernel shape (4x4, 2x4, 1x4, 1x1) or thread computes an element does not change
 * that sequence, so results do not depend on the pool size or on JIT state. beta == 0 overwrites (NaN in out does
 * not propagate).
 *
 * <p>Offsets and strides count elements (4 bytes for F32, 2 for BF16), not bytes. Not for concurrent use: the
 * task object and scratch are per instance (a second concurrent call throws); one instance per calling thread.
 * Nothing is allocated per call.
 */
public final class WeightGemm {
    /**
     * M at or below this runs the weight-streaming kernel. Measured single-threaded on a 1 MB weight (L2), per CPU
     * second (the shared 2-core VM gave no stable wall-clock times): at M = 16 the F32 streaming kernel runs at
     * about the speed of JavaGemm's unpacked dot-product path (10 vs 9-10 GB/s of weights, both compute-bound there),
     * and BF16 at M <= 16 saves dequantising W (a write and a reread of 2x its bytes).
     */
    private static final int SMALL_ROWS = 16;
    /** Weight rows per block: 4 streams from memory, 4 x 4 accumulators for a group of 4 activation rows. */
    static final int WR = 4;
    /** Pieces per pool thread a streaming call is cut into, claimed by whichever thread is free. */
    private static final int PIECES_PER_THREAD = 8;
    /** Below this many multiply-adds a call runs on the caller alone (waking the workers costs a few µs). */
    private static final long PARALLEL_MIN_MACS = 1L << 16;
    /** {@link #grouped}: at most this many activation rows in all go through one pass (the paired-row buffer's rows). */
    private static final int GROUP_ROWS = 64;
    /**
     * F32 and BF16 calls of at most SEQUENTIAL_MAX_ROWS activation rows with K at most SEQUENTIAL_MAX_K read a block's four
     * weight rows one after another (one stream through memory) instead of side by side (four streams): on a Zen 4
     * VM a decode-shaped product (K 256–1024) then read DRAM 1.1–1.9x faster (bench/RESULTS.md); each weight row's
     * sum is the same FMA chain and reduction either way, so the bits are the same.
     */
    static final int SEQUENTIAL_MAX_K = Integer.getInteger("moe4j.weightGemm.sequentialMaxK", 1024);
    static final int SEQUENTIAL_MAX_ROWS = Integer.getInteger("moe4j.weightGemm.sequentialMaxRows", 4);
    /** Scratch for the BF16 large-M path: about this many floats, at least 16 weight rows. */
    private static final long SCRATCH_FLOATS = 1L << 21;

    private static final VectorMask<Float> HALF = VectorMask.fromLong(F, laneBits(L / 2));
    private static final VectorMask<Float> QUARTER = VectorMask.fromLong(F, laneBits(L / 4));
    private static final VectorShuffle<Float> SWAP_HALF = VectorShuffle.fromOp(F, i -> i ^ (L / 2));
    private static final VectorShuffle<Float> SWAP_QUARTER = VectorShuffle.fromOp(F, i -> i ^ (L / 4));
    private static final VectorShuffle<Float> SWAP_2 = VectorShuffle.fromOp(F, i -> i ^ (L >= 16 ? 2 : 0));
    private static final VectorShuffle<Float> SWAP_1 = VectorShuffle.fromOp(F, i -> i ^ (L >= 8 ? 1 : 0));

    static {
        // fold4's butterfly (steps L/2 and L/4, then 2 and 1) covers 4 to 16 lanes: SSE/NEON to AVX-512
        if (L < 4 || L > 16) {
            throw new Moe4jException("WeightGemm: float vectors of 4 to 16 lanes supported, this JVM's preferred "
                    + "species has " + L);
        }
    }

    /** Bit i set for the lanes i that have bit w set. */
    private static long laneBits(int w) {
        long bits = 0;
        for (int i = 0; i < L; i++) {
            if ((i & w) != 0) {
                bits |= 1L << i;
            }
        }
        return bits;
    }

    private static final VectorSpecies<Integer> I = F.vectorShape().withLanes(int.class);
    /** Half the bit width of F: L shorts, widened to L ints by S2I. */
    private static final VectorSpecies<Short> S = VectorSpecies.of(short.class,
            VectorShape.forBitSize(F.vectorBitSize() / 2));

    private final WorkerPool pool;
    private final Gemm big;
    private final int maxK;
    private final int chunkRows;
    /** The BF16 dequantisation scratch [chunkRows, maxK], made by the first call that needs it (most never do). */
    private MemorySegment scratch;
    /**
     * BF16 streaming: the activation rows with each block of 2L elements reordered as [the L elements that pair with
     * the low halves of L int lanes of W, then the L that pair with the high halves] (see {@link Bf16Kernels}); the
     * scalar tail after the last whole block stays in order. [GROUP_ROWS, maxK] of native memory, which the kernels
     * read; each row is reordered in the heap row {@code pairedRow} (plain Java) and copied in.
     *
     * <p>Not a heap segment view ({@code MemorySegment.ofArray}), as it was: the JDK's segment-access methods that the
     * kernels inline keep one type profile for every caller, and a heap segment next to the native ones made them
     * polymorphic — for every vector loop in the process compiled after it, not only this one. Measured
     * (ExpertStreamBench, DRAM-sized experts): the BF16 kernels read 8.1 GB/s with the view and 12.2 with native
     * memory, and the plain streaming-read loop of the benchmarks dropped from 27 to 11 GB/s after the first BF16
     * calls and stayed there. Keep heap segments away from vector loads (PlainSegmentsTest checks the sources).
     */
    private final float[] pairedRow;
    private final MemorySegment pairedXSeg;
    private final float[] rowIn;
    private final DequantTask dequant = new DequantTask();
    private final GroupTask group;
    private final AtomicBoolean busy = new AtomicBoolean();

    /** maxK: the largest K ever passed; pool: the worker pool that runs the N split; big: the GEMM used for many rows. */
    public WeightGemm(WorkerPool pool, Gemm big, int maxK) {
        if (pool == null) {
            throw new Moe4jException("WeightGemm: pool must not be null");
        }
        if (big == null) {
            throw new Moe4jException("WeightGemm: big (the GEMM for many rows) must not be null");
        }
        if (maxK < 1) {
            throw new Moe4jException("WeightGemm: maxK must be >= 1, got " + maxK);
        }
        this.pool = pool;
        this.big = big;
        this.maxK = maxK;
        this.chunkRows = (int) Math.max(16, SCRATCH_FLOATS / maxK / 16 * 16);
        this.pairedRow = new float[maxK];
        this.pairedXSeg = Arena.ofAuto().allocate((long) GROUP_ROWS * maxK * 4, 64);
        this.rowIn = new float[maxK];
        this.group = new GroupTask(pool.threads());
    }

    /** BF16 weights, more than SMALL_ROWS rows: the mixed-precision GEMM (activations rounded to bf16), or null. */
    private MixedGemm many16;

    /**
     * Runs BF16-weight calls of more than {@link #smallRows()} rows (a prompt chunk, a popular expert) on
     * {@code mixed} — the activation rows rounded to bf16, W read as bf16, F32 accumulation — instead of
     * dequantising W to F32 for {@code big}: on a CPU with native bf16 dot products (oneDNN's bf16 matmul on
     * avx512_bf16 or AMX) that is about twice the F32 rate and reads W once. Decode-sized calls keep F32 activations.
     * Set before the first call; null switches it off.
     */
    public WeightGemm manyRowsBf16(MixedGemm mixed) {
        many16 = mixed;
        return this;
    }

    /** The mixed-precision GEMM of {@link #manyRowsBf16}, or null. */
    public MixedGemm manyRowsBf16() {
        return many16;
    }

    /** The largest K this instance takes (given to the constructor). */
    public int maxK() {
        return maxK;
    }

    /**
     * Rows at or below this go to the weight-streaming kernel; above it to {@code big} (F32) or the mixed or
     * dequantise-then-big path (BF16). {@link Integer#MAX_VALUE} while {@link #streamAllRows} is on.
     */
    public int smallRows() {
        return streamAll ? Integer.MAX_VALUE : SMALL_ROWS;
    }

    /** Every call streams, whatever its M (see {@link #streamAllRows(boolean)}). */
    private boolean streamAll;

    /**
     * With {@code on}, every call runs the weight-streaming kernel whatever its M, instead of handing more than
     * {@value #SMALL_ROWS} rows to {@code big}: each output row then has the same bits whichever other rows share the
     * call. The streaming kernels give a row the same bits in every M (the class comment), but no GEMM backend does:
     * measured (bench RowBitsProbe), the Java GEMM's rows change bits between M = 32 and 33, oneDNN's sgemm between
     * M = 1, 2..12 and 16+, its bf16 matmul between 1 and 2. A decode step turns this on, so that a sequence's tokens
     * do not depend on how many others decode with it. Above {@value #SMALL_ROWS} rows the kernel is compute-bound at a
     * fraction of the GEMM's rate.
     */
    public void streamAllRows(boolean on) {
        streamAll = on;
    }

    // x [M, K] row stride ldx, W [N, K] F32 row stride ldw -> out [M, N] row stride ldo
    public void f32(int M, int N, int K, MemorySegment x, long xOff, int ldx, MemorySegment w, long wOff, int ldw,
                    float beta, MemorySegment out, long oOff, int ldo) {
        check("f32", M, N, K, x, xOff, ldx, w, wOff, ldw, 4, out, oOff, ldo);
        if (M == 0 || N == 0) {
            return;
        }
        if (K == 0 || (M > SMALL_ROWS && !streamAll)) {
            if (K == 0) {
                scale(M, N, beta, out, oOff, ldo);
            } else {
                big.sgemm(false, true, M, N, K, 1f, x, xOff, ldx, w, wOff, ldw, beta, out, oOff, ldo);
            }
            return;
        }
        streamCall(false, M, N, K, x, xOff, ldx, w, wOff, ldw, beta, out, oOff, ldo);
    }

    // x [M, K] F32 row stride ldx, W [N, K] BF16 row stride ldw -> out [M, N] row stride ldo
    public void bf16(int M, int N, int K, MemorySegment x, long xOff, int ldx, MemorySegment w, long wOff, int ldw,
                     float beta, MemorySegment out, long oOff, int ldo) {
        check("bf16", M, N, K, x, xOff, ldx, w, wOff, ldw, 2, out, oOff, ldo);
        if (M == 0 || N == 0) {
            return;
        }
        if (K == 0) {
            scale(M, N, beta, out, oOff, ldo);
            return;
        }
        if (M <= SMALL_ROWS || streamAll) {
            streamCall(true, M, N, K, x, xOff, ldx, w, wOff, ldw, beta, out, oOff, ldo);
            return;
        }
        if (many16 != null) {
            many16.linear(M, N, K, x, xOff, ldx, w, wOff, ldw, beta, out, oOff, ldo);
            return;
        }
        enter();
        try {
            if (scratch == null) {
                // Arena.ofAuto: the scratch lives as long as this object (the class has no close, like a Gemm)
                scratch = Arena.ofAuto().allocate((long) chunkRows * maxK * 4, 64);
            }
            DequantTask t = dequant;
            for (int n0 = 0; n0 < N; n0 += chunkRows) {
                int nc = Math.min(chunkRows, N - n0);
                t.set(w, wOff + (long) n0 * ldw, ldw, K);
                // exact (a shift), so the thread split of the dequantisation cannot change bits
                pool.parallelFor(nc, (long) nc * K < PARALLEL_MIN_MACS ? 1 : pool.threads(), t);
                big.sgemm(false, true, M, nc, K, 1f, x, xOff, ldx, scratch, 0, K, beta, out, oOff + n0, ldo);
            }
            t.set(null, 0, 0, 0);
        } finally {
            busy.set(false);
        }
    }

    /** float -> bf16 bits, round to nearest even (NaN stays NaN). */
    public static short toBf16(float f) {
        return Bf16.fromFloat(f);
    }

    public static float fromBf16(short b) {
        return Bf16.toFloat(b);
    }

    /** Converts n floats to bf16 (dst element offset), for loading weights. */
    public static void toBf16(MemorySegment src, long srcOff, MemorySegment dst, long dstOff, long n) {
        if (n < 0 || srcOff < 0 || dstOff < 0) {
            throw new Moe4jException("WeightGemm.toBf16: n, srcOff and dstOff must be >= 0, got n=" + n
                    + ", srcOff=" + srcOff + ", dstOff=" + dstOff);
        }
        if ((srcOff + n) * 4 > src.byteSize() || (dstOff + n) * 2 > dst.byteSize()) {
            throw new Moe4jException("WeightGemm.toBf16: " + n + " elements from src element " + srcOff + " (f32, "
                    + src.byteSize() + " bytes) to dst element " + dstOff + " (bf16, " + dst.byteSize()
                    + " bytes) run past a segment");
        }
        Convert.f32ToBf16(src, srcOff, dst, dstOff, n);
    }

    private void enter() {
        if (!busy.compareAndSet(false, true)) {
            throw new Moe4jException("WeightGemm: called from two threads at once; use one instance per thread");
        }
    }

    /**
     * Several products with one weight shape at once — the experts of an MoE layer at decode: group i multiplies
     * {@code rows[i]} activation rows of x (from element {@code xOff[i]}, row stride ldx) by the [N, K] weight at
     * element {@code wOff[i]} of w (F32, or BF16 when {@code bf16}) into out (from {@code oOff[i]}, row stride ldo),
     * {@code out = x·Wᵀ + beta·out}. The weight-row blocks of every group are split over the pool together, one
     * fork-join for all groups instead of one per group (at batch-1 decode an MoE layer made 8 of them, each a few
     * microseconds against a few tens of microseconds of streaming). Each group's output has the bits of its own
     * {@link #f32} / {@link #bf16} call. Groups of more than {@link #smallRows()} rows, or more than 64 rows in all,
     * run as their own calls. The arrays are read, not kept; nothing is allocated.
     */
    public void grouped(boolean bf16, int groups, int[] rows, long[] xOff, long[] wOff, long[] oOff, int N, int K,
                        MemorySegment x, int ldx, MemorySegment w, int ldw, float beta, MemorySegment out, int ldo) {
        if (groups < 0 || groups > rows.length || groups > xOff.length || groups > wOff.length || groups > oOff.length)
            throw new Moe4jException("WeightGemm.grouped: " + groups + " groups, arrays of " + rows.length + ", "
                    + xOff.length + ", " + wOff.length + ", " + oOff.length);
        int total = 0;
        boolean one = true;
        for (int i = 0; i < groups; i++) {
            check(bf16 ? "bf16" : "f32", rows[i], N, K, x, xOff[i], ldx, w, wOff[i], ldw, bf16 ? 2 : 4, out, oOff[i], ldo);
            total += rows[i];
            one &= rows[i] <= smallRows();
        }
        if (!one || total > GROUP_ROWS || groups > GROUP_ROWS || N == 0 || K == 0 || groups < 2) {
            for (int i = 0; i < groups; i++) {
                if (bf16) bf16(rows[i], N, K, x, xOff[i], ldx, w, wOff[i], ldw, beta, out, oOff[i], ldo);
                else f32(rows[i], N, K, x, xOff[i], ldx, w, wOff[i], ldw, beta, out, oOff[i], ldo);
            }
            return;
        }
        enter();
        try {
            GroupTask t = group;
            long[] xo = t.xOff;
            if (bf16) {
                int r = 0;
                for (int i = 0; i < groups; i++) {
                    pairRows(rows[i], K, x, xOff[i], ldx, r);
                    xo[i] = (long) r * K;
                    r += rows[i];
                }
            } else {
                System.arraycopy(xOff, 0, xo, 0, groups);
            }
            streamGroups(bf16, groups, rows, wOff, oOff, N, K, bf16 ? pairedXSeg : x, bf16 ? K : ldx, w, ldw, beta, out,
                    ldo, total);
        } finally {
            busy.set(false);
        }
    }

    /**
     * Streams weight-row blocks (of WR rows each) through the activation rows of their group: the blocks of every
     * group of a {@link #grouped} call numbered group by group, or of one product (a group of one).
     */
    private static final class GroupTask implements WorkerPool.RangeTask {
        /** Per worker: where the kernels leave their lane sums for the scalar epilogue. */
        private final float[][] lanes;
        final long[] xOff = new long[GROUP_ROWS];
        final int[] oneRows = new int[1];
        final long[] oneW = new long[1], oneO = new long[1];
        private boolean bf16;
        private int groups, N, K, ldx, ldw, ldo, blocks;
        private int[] rows;
        private long[] wOff, oOff;
        private MemorySegment x, w, out;
        private float beta;

        void set(boolean bf16, int groups, int[] rows, long[] wOff, long[] oOff, int N, int K, MemorySegment x, int ldx,
                 MemorySegment w, int ldw, float beta, MemorySegment out, int ldo) {
            this.bf16 = bf16;
            this.groups = groups;
            this.rows = rows;
            this.wOff = wOff;
            this.oOff = oOff;
            this.N = N;
            this.K = K;
            this.x = x;
            this.ldx = ldx;
            this.w = w;
            this.ldw = ldw;
            this.beta = beta;
            this.out = out;
            this.ldo = ldo;
            this.blocks = (N + WR - 1) / WR;
        }

        GroupTask(int threads) {
            lanes = new float[threads][4 * WR * L];
        }

        @Override
        public void run(int start, int end, int worker) {
            float[] lanes = this.lanes[worker];
            for (int v = start; v < end; ) {
                int g = v / blocks, b0 = v - g * blocks, b1 = Math.min(blocks, b0 + (end - v));
                int j0 = b0 * WR, j1 = Math.min(N, b1 * WR);
                if (bf16) Bf16Kernels.rows(lanes, j0, j1, rows[g], K, x, xOff[g], ldx, w, wOff[g], ldw, beta, out, oOff[g], ldo);
                else F32Kernels.rows(lanes, j0, j1, rows[g], K, x, xOff[g], ldx, w, wOff[g], ldw, beta, out, oOff[g], ldo);
                v += b1 - b0;
            }
        }
    }

    /** One product of at most SMALL_ROWS rows: the weight-streaming kernel over the pool, as a group of one. */
    private void streamCall(boolean bf16, int M, int N, int K, MemorySegment x, long xOff, int ldx,
                            MemorySegment w, long wOff, int ldw, float beta, MemorySegment out, long oOff, int ldo) {
        enter();
        try {
            GroupTask t = group;
            if (!bf16) {
                t.xOff[0] = xOff;
                t.oneRows[0] = M;
                t.oneW[0] = wOff;
                t.oneO[0] = oOff;
                streamGroups(false, 1, t.oneRows, t.oneW, t.oneO, N, K, x, ldx, w, ldw, beta, out, ldo, M);
                return;
            }
            // BF16: the paired rows hold GROUP_ROWS; more rows (streamAllRows) pass over W once per GROUP_ROWS
            for (int r0 = 0; r0 < M; r0 += GROUP_ROWS) {
                int m = Math.min(GROUP_ROWS, M - r0);
                pairRows(m, K, x, xOff + (long) r0 * ldx, ldx);
                t.xOff[0] = 0;
                t.oneRows[0] = m;
                t.oneW[0] = wOff;
                t.oneO[0] = oOff + (long) r0 * ldo;
                streamGroups(true, 1, t.oneRows, t.oneW, t.oneO, N, K, pairedXSeg, K, w, ldw, beta, out, ldo, m);
            }
        } finally {
            busy.set(false);
        }
    }

    /**
     * The kernel over the weight-row blocks of every group, split over the pool; group.xOff holds each group's first
     * activation element in x (the paired rows for BF16). totalRows: the groups' rows, for the parallel threshold.
     */
    private void streamGroups(boolean bf16, int groups, int[] rows, long[] wOff, long[] oOff, int N, int K,
                              MemorySegment x, int ldx, MemorySegment w, int ldw, float beta, MemorySegment out, int ldo,
                              int totalRows) {
        GroupTask t = group;
        t.set(bf16, groups, rows, wOff, oOff, N, K, x, ldx, w, ldw, beta, out, ldo);
        int blocks = (N + WR - 1) / WR;
        // claimed pieces, not one static chunk per thread: at decode a call is tens of microseconds, and a worker
        // that wakes late (or a vCPU taken away) held the caller up for a fifth of a BF16 decode step
        int pieces = (long) totalRows * N * K < PARALLEL_MIN_MACS ? 1 : PIECES_PER_THREAD * pool.threads();
        pool.parallelForPieces(groups * blocks, pieces, t);
        t.set(false, 0, null, null, null, 0, 0, null, 0, null, 0, 0f, null, 0);
    }

    /** The upper 16 bits of an int lane: a bf16 that is already a float when the low half is masked off. */
    private static final int HIGH = 0xFFFF0000;

    /** Low 16 bits of an int lane hold the bf16 at the lower address on a little-endian machine. */
    private static final int LOW_HALF = NATIVE == java.nio.ByteOrder.LITTLE_ENDIAN ? 0 : 1;

    /** x rows -> pairedXSeg [M, K]: each whole 2L block as (elements 2i + LOW_HALF, then 2i + 1 - LOW_HALF), tail in order. */
    private void pairRows(int M, int K, MemorySegment x, long xOff, int ldx) {
        pairRows(M, K, x, xOff, ldx, 0);
    }

    /** As {@link #pairRows(int, int, MemorySegment, long, int)} into pairedXSeg rows [dstRow, dstRow + M) of K floats. */
    private void pairRows(int M, int K, MemorySegment x, long xOff, int ldx, int dstRow) {
        float[] in = rowIn;
        float[] px = pairedRow;
        int kv = K - K % (2 * L);
        for (int r = 0; r < M; r++) {
            MemorySegment.copy(x, Tensor.FLOAT, (xOff + (long) r * ldx) * 4, in, 0, K);
            int row = (dstRow + r) * K;
            for (int b = 0; b < kv; b += 2 * L) {
                for (int i = 0; i < L; i++) {
                    px[b + i] = in[b + 2 * i + LOW_HALF];
                    px[b + L + i] = in[b + 2 * i + 1 - LOW_HALF];
                }
            }
            System.arraycopy(in, kv, px, kv, K - kv);
            MemorySegment.copy(px, 0, pairedXSeg, Tensor.FLOAT, row * 4L, K);
        }
    }

    private void check(String op, int M, int N, int K, MemorySegment x, long xOff, int ldx,
                       MemorySegment w, long wOff, int ldw, int wBytes, MemorySegment out, long oOff, int ldo) {
        if (M < 0 || N < 0 || K < 0) {
            throw new Moe4jException("WeightGemm." + op + ": M, N, K must be >= 0, got " + M + ", " + N + ", " + K);
        }
        if (K > maxK) {
            throw new Moe4jException("WeightGemm." + op + ": K=" + K + " exceeds maxK=" + maxK
                    + " given to the constructor (the largest K ever passed)");
        }
        if (ldx < K || ldw < K || ldo < N) {
            throw new Moe4jException("WeightGemm." + op + ": strides too small: ldx=" + ldx + " (>= K=" + K
                    + "), ldw=" + ldw + " (>= K), ldo=" + ldo + " (>= N=" + N + ")");
        }
        if (xOff < 0 || wOff < 0 || oOff < 0) {
            throw new Moe4jException("WeightGemm." + op + ": offsets must be >= 0, got xOff=" + xOff + ", wOff="
                    + wOff + ", oOff=" + oOff);
        }
        if (M == 0 || N == 0) {
            return;
        }
        need(op, "x", x, xOff, M, ldx, K, 4);
        need(op, "w", w, wOff, N, ldw, K, wBytes);
        need(op, "out", out, oOff, M, ldo, N, 4);
    }

    private static void need(String op, String name, MemorySegment s, long off, int rows, int ld, int cols, int bytes) {
        if (s == null) {
            throw new Moe4jException("WeightGemm." + op + ": " + name + " must not be null");
        }
        long end = cols == 0 ? 0 : (off + (long) (rows - 1) * ld + cols) * bytes;
        if (end > s.byteSize()) {
            throw new Moe4jException("WeightGemm." + op + ": " + name + " [" + rows + ", " + cols + "] with row stride "
                    + ld + " from element " + off + " needs " + end + " bytes, segment has " + s.byteSize());
        }
    }

    /** out = beta * out (beta == 0 writes zeros, ignoring NaN). */
    private static void scale(int M, int N, float beta, MemorySegment out, long oOff, int ldo) {
        for (int r = 0; r < M; r++) {
            long row = oOff + (long) r * ldo;
            for (int j = 0; j < N; j++) {
                put(out, row + j, beta, 0f);
            }
        }
    }

    /** out[e] = s + beta * out[e], or s when beta == 0. */
    private static void put(MemorySegment out, long e, float beta, float s) {
        float v = s;
        if (beta != 0f) {
            v = Math.fma(beta, out.getAtIndex(Tensor.FLOAT, e), s);
        }
        out.setAtIndex(Tensor.FLOAT, e, v);
    }

    /**
     * Σ lanes[base .. base + L) in the fixed pairwise order of {@link VectorMath#sum} (lane i += lane i + w for
     * w = L/2, ..., 1), in place: the 1 x 1 kernel's reduction, the same tree as {@link #fold4}.
     */
    static float reduce(float[] lanes, int base) {
        for (int w = L / 2; w >= 1; w >>= 1) {
            for (int i = base; i < base + w; i++) {
                lanes[i] += lanes[i + w];
            }
        }
        return lanes[base];
    }

    /**
     * Folds the four accumulators the kernels stored at lanes[base + q L ..), q = 0..3, into their four sums, each
     * in the pairwise order of {@link VectorMath#sum} (the order {@link #reduce} uses too), left in lanes[base + 0,
     * L/2, L/4, 3L/4] for {@link #store4}. A butterfly step of width w combines p and q into one vector: lanes
     * without bit w get p[i] + p[i + w], lanes with it q[i - w] + q[i]; steps w = L/2 and L/4 fold the four
     * accumulators into one vector, then v + v[i ^ w] for w = L/8 .. 1 finishes the sums. Four separate lane sums
     * cost as much as the K loop itself when K is ~1000.
     *
     * <p>Takes and returns no vectors, and calls no helper that does: in the kernels, C2 ran out of inlining budget
     * in the 4 x 4 kernel and boxed the accumulators on every K step, and a small vector helper compiled on its own
     * (non-constant masks, so large) is refused inlining later and boxes its arguments.
     */
    private static void fold4(float[] lanes, int base) {
        FloatVector a0 = FloatVector.fromArray(F, lanes, base);
        FloatVector a1 = FloatVector.fromArray(F, lanes, base + L);
        FloatVector a2 = FloatVector.fromArray(F, lanes, base + 2 * L);
        FloatVector a3 = FloatVector.fromArray(F, lanes, base + 3 * L);
        FloatVector v01 = a0.blend(a1, HALF).add(a1.blend(a0, HALF).rearrange(SWAP_HALF));
        FloatVector v23 = a2.blend(a3, HALF).add(a3.blend(a2, HALF).rearrange(SWAP_HALF));
        FloatVector v = v01.blend(v23, QUARTER).add(v23.blend(v01, QUARTER).rearrange(SWAP_QUARTER));
        if (L >= 16) {
            v = v.add(v.rearrange(SWAP_2));
        }
        if (L >= 8) {
            v = v.add(v.rearrange(SWAP_1));
        }
        v.intoArray(lanes, base);
    }

    /**
     * out[i] (+)= the four sums {@link #fold4} left in lanes[base + 0, L/2, L/4, 3L/4] for weight rows we, we + ldw,
     * we + 2 ldw, we + 3 ldw, each with its scalar tail; out elements oe .. oe + 3.
     */
    private static void store4(float[] lanes, int base, MemorySegment x, long xe, MemorySegment w, long we, int ldw,
                               boolean bf16, int kv, int K, float beta, MemorySegment out, long oe) {
        put(out, oe, beta, tail(lanes[base], x, xe, w, we, bf16, kv, K));
        put(out, oe + 1, beta, tail(lanes[base + L / 2], x, xe, w, we + ldw, bf16, kv, K));
        put(out, oe + 2, beta, tail(lanes[base + L / 4], x, xe, w, we + 2L * ldw, bf16, kv, K));
        put(out, oe + 3, beta, tail(lanes[base + 3 * L / 4], x, xe, w, we + 3L * ldw, bf16, kv, K));
    }

    /** The dot product's scalar tail p in [kv, K) added to s, one fused multiply-add per element. */
    private static float tail(float s, MemorySegment x, long xe, MemorySegment w, long we, boolean bf16, int kv, int K) {
        for (int p = kv; p < K; p++) {
            float wv = bf16 ? Bf16.toFloat(w.getAtIndex(Tensor.SHORT, we + p)) : w.getAtIndex(Tensor.FLOAT, we + p);
            s = Math.fma(x.getAtIndex(Tensor.FLOAT, xe + p), wv, s);
        }
        return s;
    }

    // Loads are written out at every use: a helper returning a vector is compiled on its own once the kernels are
    // large, is then not inlined, and boxes every vector it returns.

    /** Dequantises BF16 weight rows [start, end) of the current chunk into the scratch [chunkRows, K]. */
    private final class DequantTask implements WorkerPool.RangeTask {
        private MemorySegment w;
        private long wOff;
        private int ldw;
        private int K;

        void set(MemorySegment w, long wOff, int ldw, int K) {
            this.w = w;
            this.wOff = wOff;
            this.ldw = ldw;
            this.K = K;
        }

        @Override
        public void run(int start, int end, int worker) {
            for (int j = start; j < end; j++) {
                Convert.bf16ToF32(w, wOff + (long) j * ldw, scratch, (long) j * K, K);
            }
        }
    }

    /**
     * Short weight rows, few activation rows (decode): each whole block of WR weight rows in [j0, j1) read one row
     * after another (the kernels' seq1 / seq2, pairs of activation rows, then a last single one) instead of side by
     * side; the sums are the same FMA chains and the same reduction as the side-by-side kernels'. Returns the first
     * weight row it left: j0 when the call is not of that kind (K over SEQUENTIAL_MAX_K or M over
     * SEQUENTIAL_MAX_ROWS), else the first of the tail of fewer than WR rows.
     */
    private static int sequentialRows(boolean bf16, float[] lanes, int j0, int j1, int M, int K, MemorySegment x,
                                      long xOff, int ldx, MemorySegment w, long wOff, int ldw, float beta,
                                      MemorySegment out, long oOff, int ldo) {
        if (K > SEQUENTIAL_MAX_K || M > SEQUENTIAL_MAX_ROWS) return j0;
        int kv = bf16 ? K - K % (2 * L) : F.loopBound(K);
        int j = j0;
        for (; j + WR <= j1; j += WR) {
            long we = wOff + (long) j * ldw;
            int r = 0;
            for (; r + 2 <= M; r += 2) {
                long xe = xOff + (long) r * ldx;
                for (int q = 0; q < WR; q++) {
                    if (bf16) Bf16Kernels.seq2(K, lanes, q, x, xe, ldx, w, we + (long) q * ldw);
                    else F32Kernels.seq2(K, lanes, q, x, xe, ldx, w, we + (long) q * ldw);
                }
                fold4(lanes, 0);
                fold4(lanes, 4 * L);
                store4(lanes, 0, x, xe, w, we, ldw, bf16, kv, K, beta, out, oOff + (long) r * ldo + j);
                store4(lanes, 4 * L, x, xe + ldx, w, we, ldw, bf16, kv, K, beta, out, oOff + (long) (r + 1) * ldo + j);
            }
            if (r < M) {
                long xe = xOff + (long) r * ldx;
                for (int q = 0; q < WR; q++) {
                    if (bf16) Bf16Kernels.seq1(K, lanes, q, x, xe, w, we + (long) q * ldw);
                    else F32Kernels.seq1(K, lanes, q, x, xe, w, we + (long) q * ldw);
                }
                fold4(lanes, 0);
                store4(lanes, 0, x, xe, w, we, ldw, bf16, kv, K, beta, out, oOff + (long) r * ldo + j);
            }
        }
        return j;
    }

    /**
     * F32 weights. Shapes: x [M, K] (row stride ldx, from element xOff), W [N, K] (ldw, wOff), out [M, N] (ldo, oOff).
     * Kernel r x q: r activation rows times q weight rows, r * q accumulators acc[i][j] += x[i, p..p+L) * W[j, p..p+L).
     */
    static final class F32Kernels {
        private F32Kernels() {
        }

        static void rows(float[] lanes, int j0, int j1, int M, int K, MemorySegment x, long xOff, int ldx,
                         MemorySegment w, long wOff, int ldw, float beta, MemorySegment out, long oOff, int ldo) {
            int j = sequentialRows(false, lanes, j0, j1, M, K, x, xOff, ldx, w, wOff, ldw, beta, out, oOff, ldo);
            for (; j + WR <= j1; j += WR) {
                long we = wOff + (long) j * ldw;
                int r = 0;
                for (; r + 4 <= M; r += 4) {
                    k4x4(K, lanes, x, xOff + (long) r * ldx, ldx, w, we, ldw, beta, out, oOff + (long) r * ldo + j, ldo);
                }
                for (; r + 2 <= M; r += 2) {
                    k2x4(K, lanes, x, xOff + (long) r * ldx, ldx, w, we, ldw, beta, out, oOff + (long) r * ldo + j, ldo);
                }
                for (; r < M; r++) {
                    k1x4(K, lanes, x, xOff + (long) r * ldx, w, we, ldw, beta, out, oOff + (long) r * ldo + j);
                }
            }
            for (; j < j1; j++) {
                long we = wOff + (long) j * ldw;
                for (int r = 0; r < M; r++) {
                    k1x1(K, lanes, x, xOff + (long) r * ldx, w, we, beta, out, oOff + (long) r * ldo + j);
                }
            }
        }

        /**
         * Weight row q of a block (element we), one activation row (element xe): its accumulator, the same FMA chain
         * over p as {@link #k1x4}'s, stored at lanes[q L ..) for {@link #fold4}.
         */
        static void seq1(int K, float[] lanes, int q, MemorySegment x, long xe, MemorySegment w, long we) {
            int kv = F.loopBound(K);
            long xb = xe * 4;
            long wb = we * 4;
            FloatVector a = FloatVector.zero(F);
            for (int p = 0; p < kv; p += L) {
                a = FloatVector.fromMemorySegment(F, w, wb + 4L * p, NATIVE).fma(FloatVector.fromMemorySegment(F, x, xb + 4L * p, NATIVE), a);
            }
            a.intoArray(lanes, q * L);
        }

        /** As {@link #seq1} for two activation rows (xe and xe + ldx): lanes[q L ..) and lanes[(4 + q) L ..). */
        static void seq2(int K, float[] lanes, int q, MemorySegment x, long xe, int ldx, MemorySegment w, long we) {
            int kv = F.loopBound(K);
            long x0 = xe * 4;
            long x1 = x0 + 4L * ldx;
            long wb = we * 4;
            FloatVector a0 = FloatVector.zero(F);
            FloatVector a1 = FloatVector.zero(F);
            for (int p = 0; p < kv; p += L) {
                long o = 4L * p;
                FloatVector v = FloatVector.fromMemorySegment(F, w, wb + o, NATIVE);
                a0 = v.fma(FloatVector.fromMemorySegment(F, x, x0 + o, NATIVE), a0);
                a1 = v.fma(FloatVector.fromMemorySegment(F, x, x1 + o, NATIVE), a1);
            }
            a0.intoArray(lanes, q * L);
            a1.intoArray(lanes, (4 + q) * L);
        }

        static void k1x1(int K, float[] lanes, MemorySegment x, long xe, MemorySegment w, long we, float beta,
                         MemorySegment out, long oe) {
            seq1(K, lanes, 0, x, xe, w, we);
            put(out, oe, beta, tail(reduce(lanes, 0), x, xe, w, we, false, F.loopBound(K), K));
        }

        static void k1x4(int K, float[] lanes, MemorySegment x, long xe, MemorySegment w, long we, int ldw, float beta,
                         MemorySegment out, long oe) {
            int kv = F.loopBound(K);
            long x0 = xe * 4;
            long w0 = we * 4;
            long w1 = w0 + 4L * ldw;
            long w2 = w1 + 4L * ldw;
            long w3 = w2 + 4L * ldw;
            FloatVector a00 = FloatVector.zero(F);
            FloatVector a01 = FloatVector.zero(F);
            FloatVector a02 = FloatVector.zero(F);
            FloatVector a03 = FloatVector.zero(F);
            for (int p = 0; p < kv; p += L) {
                long o = 4L * p;
                long ox = o;
                FloatVector v0 = FloatVector.fromMemorySegment(F, w, w0 + o, NATIVE);
                FloatVector v1 = FloatVector.fromMemorySegment(F, w, w1 + o, NATIVE);
                FloatVector v2 = FloatVector.fromMemorySegment(F, w, w2 + o, NATIVE);
                FloatVector v3 = FloatVector.fromMemorySegment(F, w, w3 + o, NATIVE);
                FloatVector u0 = FloatVector.fromMemorySegment(F, x, x0 + ox, NATIVE);
                a00 = v0.fma(u0, a00);
                a01 = v1.fma(u0, a01);
                a02 = v2.fma(u0, a02);
                a03 = v3.fma(u0, a03);
            }
            a00.intoArray(lanes, 0);
            a01.intoArray(lanes, L);
            a02.intoArray(lanes, 2 * L);
            a03.intoArray(lanes, 3 * L);
            fold4(lanes, 0);
            store4(lanes, 0, x, xe, w, we, ldw, false, kv, K, beta, out, oe);
        }

        static void k2x4(int K, float[] lanes, MemorySegment x, long xe, int ldx, MemorySegment w, long we, int ldw,
                         float beta, MemorySegment out, long oe, int ldo) {
            int kv = F.loopBound(K);
            long x0 = xe * 4;
            long x1 = x0 + 4L * ldx;
            long w0 = we * 4;
            long w1 = w0 + 4L * ldw;
            long w2 = w1 + 4L * ldw;
            long w3 = w2 + 4L * ldw;
            FloatVector a00 = FloatVector.zero(F);
            FloatVector a01 = FloatVector.zero(F);
            FloatVector a02 = FloatVector.zero(F);
            FloatVector a03 = FloatVector.zero(F);
            FloatVector a10 = FloatVector.zero(F);
            FloatVector a11 = FloatVector.zero(F);
            FloatVector a12 = FloatVector.zero(F);
            FloatVector a13 = FloatVector.zero(F);
            for (int p = 0; p < kv; p += L) {
                long o = 4L * p;
                long ox = o;
                FloatVector v0 = FloatVector.fromMemorySegment(F, w, w0 + o, NATIVE);
                FloatVector v1 = FloatVector.fromMemorySegment(F, w, w1 + o, NATIVE);
                FloatVector v2 = FloatVector.fromMemorySegment(F, w, w2 + o, NATIVE);
                FloatVector v3 = FloatVector.fromMemorySegment(F, w, w3 + o, NATIVE);
                FloatVector u0 = FloatVector.fromMemorySegment(F, x, x0 + ox, NATIVE);
                a00 = v0.fma(u0, a00);
                a01 = v1.fma(u0, a01);
                a02 = v2.fma(u0, a02);
                a03 = v3.fma(u0, a03);
                FloatVector u1 = FloatVector.fromMemorySegment(F, x, x1 + ox, NATIVE);
                a10 = v0.fma(u1, a10);
                a11 = v1.fma(u1, a11);
                a12 = v2.fma(u1, a12);
                a13 = v3.fma(u1, a13);
            }
            a00.intoArray(lanes, 0);
            a01.intoArray(lanes, L);
            a02.intoArray(lanes, 2 * L);
            a03.intoArray(lanes, 3 * L);
            a10.intoArray(lanes, 4 * L);
            a11.intoArray(lanes, 5 * L);
            a12.intoArray(lanes, 6 * L);
            a13.intoArray(lanes, 7 * L);
            fold4(lanes, 0);
            fold4(lanes, 4 * L);
            store4(lanes, 0, x, xe, w, we, ldw, false, kv, K, beta, out, oe);
            store4(lanes, 4 * L, x, xe + ldx, w, we, ldw, false, kv, K, beta, out, oe + ldo);
        }

        static void k4x4(int K, float[] lanes, MemorySegment x, long xe, int ldx, MemorySegment w, long we, int ldw,
                         float beta, MemorySegment out, long oe, int ldo) {
            int kv = F.loopBound(K);
            long x0 = xe * 4;
            long x1 = x0 + 4L * ldx;
            long x2 = x1 + 4L * ldx;
            long x3 = x2 + 4L * ldx;
            long w0 = we * 4;
            long w1 = w0 + 4L * ldw;
            long w2 = w1 + 4L * ldw;
            long w3 = w2 + 4L * ldw;
            FloatVector a00 = FloatVector.zero(F);
            FloatVector a01 = FloatVector.zero(F);
            FloatVector a02 = FloatVector.zero(F);
            FloatVector a03 = FloatVector.zero(F);
            FloatVector a10 = FloatVector.zero(F);
            FloatVector a11 = FloatVector.zero(F);
            FloatVector a12 = FloatVector.zero(F);
            FloatVector a13 = FloatVector.zero(F);
            FloatVector a20 = FloatVector.zero(F);
            FloatVector a21 = FloatVector.zero(F);
            FloatVector a22 = FloatVector.zero(F);
            FloatVector a23 = FloatVector.zero(F);
            FloatVector a30 = FloatVector.zero(F);
            FloatVector a31 = FloatVector.zero(F);
            FloatVector a32 = FloatVector.zero(F);
            FloatVector a33 = FloatVector.zero(F);
            for (int p = 0; p < kv; p += L) {
                long o = 4L * p;
                long ox = o;
                FloatVector v0 = FloatVector.fromMemorySegment(F, w, w0 + o, NATIVE);
                FloatVector v1 = FloatVector.fromMemorySegment(F, w, w1 + o, NATIVE);
                FloatVector v2 = FloatVector.fromMemorySegment(F, w, w2 + o, NATIVE);
                FloatVector v3 = FloatVector.fromMemorySegment(F, w, w3 + o, NATIVE);
                FloatVector u0 = FloatVector.fromMemorySegment(F, x, x0 + ox, NATIVE);
                a00 = v0.fma(u0, a00);
                a01 = v1.fma(u0, a01);
                a02 = v2.fma(u0, a02);
                a03 = v3.fma(u0, a03);
                FloatVector u1 = FloatVector.fromMemorySegment(F, x, x1 + ox, NATIVE);
                a10 = v0.fma(u1, a10);
                a11 = v1.fma(u1, a11);
                a12 = v2.fma(u1, a12);
                a13 = v3.fma(u1, a13);
                FloatVector u2 = FloatVector.fromMemorySegment(F, x, x2 + ox, NATIVE);
                a20 = v0.fma(u2, a20);
                a21 = v1.fma(u2, a21);
                a22 = v2.fma(u2, a22);
                a23 = v3.fma(u2, a23);
                FloatVector u3 = FloatVector.fromMemorySegment(F, x, x3 + ox, NATIVE);
                a30 = v0.fma(u3, a30);
                a31 = v1.fma(u3, a31);
                a32 = v2.fma(u3, a32);
                a33 = v3.fma(u3, a33);
            }
            a00.intoArray(lanes, 0);
            a01.intoArray(lanes, L);
            a02.intoArray(lanes, 2 * L);
            a03.intoArray(lanes, 3 * L);
            a10.intoArray(lanes, 4 * L);
            a11.intoArray(lanes, 5 * L);
            a12.intoArray(lanes, 6 * L);
            a13.intoArray(lanes, 7 * L);
            a20.intoArray(lanes, 8 * L);
            a21.intoArray(lanes, 9 * L);
            a22.intoArray(lanes, 10 * L);
            a23.intoArray(lanes, 11 * L);
            a30.intoArray(lanes, 12 * L);
            a31.intoArray(lanes, 13 * L);
            a32.intoArray(lanes, 14 * L);
            a33.intoArray(lanes, 15 * L);
            fold4(lanes, 0);
            fold4(lanes, 4 * L);
            fold4(lanes, 8 * L);
            fold4(lanes, 12 * L);
            store4(lanes, 0, x, xe, w, we, ldw, false, kv, K, beta, out, oe);
            store4(lanes, 4 * L, x, xe + ldx, w, we, ldw, false, kv, K, beta, out, oe + ldo);
            store4(lanes, 8 * L, x, xe + 2L * ldx, w, we, ldw, false, kv, K, beta, out, oe + 2L * ldo);
            store4(lanes, 12 * L, x, xe + 3L * ldx, w, we, ldw, false, kv, K, beta, out, oe + 3L * ldo);
        }
    }

    /** BF16 weights: the F32 kernels with each weight vector loaded as L shorts and widened (see {@link #bf16At}). */
    static final class Bf16Kernels {
        private Bf16Kernels() {
        }

        static void rows(float[] lanes, int j0, int j1, int M, int K, MemorySegment x, long xOff, int ldx,
                         MemorySegment w, long wOff, int ldw, float beta, MemorySegment out, long oOff, int ldo) {
            int j = sequentialRows(true, lanes, j0, j1, M, K, x, xOff, ldx, w, wOff, ldw, beta, out, oOff, ldo);
            for (; j + WR <= j1; j += WR) {
                long we = wOff + (long) j * ldw;
                int r = 0;
                // no 4 x 4 kernel for BF16: with the widening of four weight vectors next to sixteen accumulators,
                // C2 now and then compiled it with its vectors boxed (11-25 MB allocated per decoded token at batch
                // 4 and 16, in one JVM of three); pairs of rows re-read the block of weights from L1 instead
                for (; r + 2 <= M; r += 2) {
                    k2x4(K, lanes, x, xOff + (long) r * ldx, ldx, w, we, ldw, beta, out, oOff + (long) r * ldo + j, ldo);
                }
                for (; r < M; r++) {
                    k1x4(K, lanes, x, xOff + (long) r * ldx, w, we, ldw, beta, out, oOff + (long) r * ldo + j);
                }
            }
            for (; j < j1; j++) {
                long we = wOff + (long) j * ldw;
                for (int r = 0; r < M; r++) {
                    k1x1(K, lanes, x, xOff + (long) r * ldx, w, we, beta, out, oOff + (long) r * ldo + j);
                }
            }
        }

        /**
         * Weight row q of a block (element we), one activation row in paired order (element xe): its accumulator,
         * the same FMA chain over p as {@link #k1x4}'s (low halves, then high halves, per step), stored at
         * lanes[q L ..) for {@link #fold4}.
         */
        static void seq1(int K, float[] lanes, int q, MemorySegment x, long xe, MemorySegment w, long we) {
            int kv = K - K % (2 * L);
            long xb = xe * 4;
            long wb = we * 2;
            FloatVector a = FloatVector.zero(F);
            for (int p = 0; p < kv; p += 2 * L) {
                IntVector v = IntVector.fromMemorySegment(I, w, wb + 2L * p, NATIVE);
                a = v.lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats().fma(FloatVector.fromMemorySegment(F, x, xb + 4L * p, NATIVE), a);
                a = v.lanewise(VectorOperators.AND, HIGH).reinterpretAsFloats().fma(FloatVector.fromMemorySegment(F, x, xb + 4L * p + 4L * L, NATIVE), a);
            }
            a.intoArray(lanes, q * L);
        }

        /** As {@link #seq1} for two activation rows (xe and xe + ldx): lanes[q L ..) and lanes[(4 + q) L ..). */
        static void seq2(int K, float[] lanes, int q, MemorySegment x, long xe, int ldx, MemorySegment w, long we) {
            int kv = K - K % (2 * L);
            long x0 = xe * 4;
            long x1 = x0 + 4L * ldx;
            long wb = we * 2;
            FloatVector a0 = FloatVector.zero(F);
            FloatVector a1 = FloatVector.zero(F);
            for (int p = 0; p < kv; p += 2 * L) {
                long ox = 4L * p;
                IntVector v = IntVector.fromMemorySegment(I, w, wb + 2L * p, NATIVE);
                FloatVector lo = v.lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats();
                FloatVector hi = v.lanewise(VectorOperators.AND, HIGH).reinterpretAsFloats();
                a0 = lo.fma(FloatVector.fromMemorySegment(F, x, x0 + ox, NATIVE), a0);
                a0 = hi.fma(FloatVector.fromMemorySegment(F, x, x0 + ox + 4L * L, NATIVE), a0);
                a1 = lo.fma(FloatVector.fromMemorySegment(F, x, x1 + ox, NATIVE), a1);
                a1 = hi.fma(FloatVector.fromMemorySegment(F, x, x1 + ox + 4L * L, NATIVE), a1);
            }
            a0.intoArray(lanes, q * L);
            a1.intoArray(lanes, (4 + q) * L);
        }

        static void k1x1(int K, float[] lanes, MemorySegment x, long xe, MemorySegment w, long we, float beta,
                         MemorySegment out, long oe) {
            seq1(K, lanes, 0, x, xe, w, we);
            put(out, oe, beta, tail(reduce(lanes, 0), x, xe, w, we, true, K - K % (2 * L), K));
        }

        static void k1x4(int K, float[] lanes, MemorySegment x, long xe, MemorySegment w, long we, int ldw, float beta,
                         MemorySegment out, long oe) {
            int kv = K - K % (2 * L);
            long x0 = xe * 4;
            long w0 = we * 2;
            long w1 = w0 + 2L * ldw;
            long w2 = w1 + 2L * ldw;
            long w3 = w2 + 2L * ldw;
            FloatVector a00 = FloatVector.zero(F);
            FloatVector a01 = FloatVector.zero(F);
            FloatVector a02 = FloatVector.zero(F);
            FloatVector a03 = FloatVector.zero(F);
            for (int p = 0; p < kv; p += 2 * L) {
                long o = 2L * p;
                long ox = 4L * p;
                IntVector q0 = IntVector.fromMemorySegment(I, w, w0 + o, NATIVE);
                FloatVector v0 = q0.lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats();
                FloatVector h0 = q0.lanewise(VectorOperators.AND, HIGH).reinterpretAsFloats();
                IntVector q1 = IntVector.fromMemorySegment(I, w, w1 + o, NATIVE);
                FloatVector v1 = q1.lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats();
                FloatVector h1 = q1.lanewise(VectorOperators.AND, HIGH).reinterpretAsFloats();
                IntVector q2 = IntVector.fromMemorySegment(I, w, w2 + o, NATIVE);
                FloatVector v2 = q2.lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats();
                FloatVector h2 = q2.lanewise(VectorOperators.AND, HIGH).reinterpretAsFloats();
                IntVector q3 = IntVector.fromMemorySegment(I, w, w3 + o, NATIVE);
                FloatVector v3 = q3.lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats();
                FloatVector h3 = q3.lanewise(VectorOperators.AND, HIGH).reinterpretAsFloats();
                FloatVector u0 = FloatVector.fromMemorySegment(F, x, x0 + ox, NATIVE);
                a00 = v0.fma(u0, a00);
                a01 = v1.fma(u0, a01);
                a02 = v2.fma(u0, a02);
                a03 = v3.fma(u0, a03);
                FloatVector g0 = FloatVector.fromMemorySegment(F, x, x0 + ox + 4L * L, NATIVE);
                a00 = h0.fma(g0, a00);
                a01 = h1.fma(g0, a01);
                a02 = h2.fma(g0, a02);
                a03 = h3.fma(g0, a03);
            }
            a00.intoArray(lanes, 0);
            a01.intoArray(lanes, L);
            a02.intoArray(lanes, 2 * L);
            a03.intoArray(lanes, 3 * L);
            fold4(lanes, 0);
            store4(lanes, 0, x, xe, w, we, ldw, true, kv, K, beta, out, oe);
        }

        static void k2x4(int K, float[] lanes, MemorySegment x, long xe, int ldx, MemorySegment w, long we, int ldw,
                         float beta, MemorySegment out, long oe, int ldo) {
            int kv = K - K % (2 * L);
            long x0 = xe * 4;
            long x1 = x0 + 4L * ldx;
            long w0 = we * 2;
            long w1 = w0 + 2L * ldw;
            long w2 = w1 + 2L * ldw;
            long w3 = w2 + 2L * ldw;
            FloatVector a00 = FloatVector.zero(F);
            FloatVector a01 = FloatVector.zero(F);
            FloatVector a02 = FloatVector.zero(F);
            FloatVector a03 = FloatVector.zero(F);
            FloatVector a10 = FloatVector.zero(F);
            FloatVector a11 = FloatVector.zero(F);
            FloatVector a12 = FloatVector.zero(F);
            FloatVector a13 = FloatVector.zero(F);
            for (int p = 0; p < kv; p += 2 * L) {
                long o = 2L * p;
                long ox = 4L * p;
                IntVector q0 = IntVector.fromMemorySegment(I, w, w0 + o, NATIVE);
                FloatVector v0 = q0.lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats();
                FloatVector h0 = q0.lanewise(VectorOperators.AND, HIGH).reinterpretAsFloats();
                IntVector q1 = IntVector.fromMemorySegment(I, w, w1 + o, NATIVE);
                FloatVector v1 = q1.lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats();
                FloatVector h1 = q1.lanewise(VectorOperators.AND, HIGH).reinterpretAsFloats();
                IntVector q2 = IntVector.fromMemorySegment(I, w, w2 + o, NATIVE);
                FloatVector v2 = q2.lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats();
                FloatVector h2 = q2.lanewise(VectorOperators.AND, HIGH).reinterpretAsFloats();
                IntVector q3 = IntVector.fromMemorySegment(I, w, w3 + o, NATIVE);
                FloatVector v3 = q3.lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats();
                FloatVector h3 = q3.lanewise(VectorOperators.AND, HIGH).reinterpretAsFloats();
                FloatVector u0 = FloatVector.fromMemorySegment(F, x, x0 + ox, NATIVE);
                a00 = v0.fma(u0, a00);
                a01 = v1.fma(u0, a01);
                a02 = v2.fma(u0, a02);
                a03 = v3.fma(u0, a03);
                FloatVector g0 = FloatVector.fromMemorySegment(F, x, x0 + ox + 4L * L, NATIVE);
                a00 = h0.fma(g0, a00);
                a01 = h1.fma(g0, a01);
                a02 = h2.fma(g0, a02);
                a03 = h3.fma(g0, a03);
                FloatVector u1 = FloatVector.fromMemorySegment(F, x, x1 + ox, NATIVE);
                a10 = v0.fma(u1, a10);
                a11 = v1.fma(u1, a11);
                a12 = v2.fma(u1, a12);
                a13 = v3.fma(u1, a13);
                FloatVector g1 = FloatVector.fromMemorySegment(F, x, x1 + ox + 4L * L, NATIVE);
                a10 = h0.fma(g1, a10);
                a11 = h1.fma(g1, a11);
                a12 = h2.fma(g1, a12);
                a13 = h3.fma(g1, a13);
            }
            a00.intoArray(lanes, 0);
            a01.intoArray(lanes, L);
            a02.intoArray(lanes, 2 * L);
            a03.intoArray(lanes, 3 * L);
            a10.intoArray(lanes, 4 * L);
            a11.intoArray(lanes, 5 * L);
            a12.intoArray(lanes, 6 * L);
            a13.intoArray(lanes, 7 * L);
            fold4(lanes, 0);
            fold4(lanes, 4 * L);
            store4(lanes, 0, x, xe, w, we, ldw, true, kv, K, beta, out, oe);
            store4(lanes, 4 * L, x, xe + ldx, w, we, ldw, true, kv, K, beta, out, oe + ldo);
        }
    }
}
