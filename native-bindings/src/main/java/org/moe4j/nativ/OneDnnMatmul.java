package org.moe4j.nativ;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.HashMap;
import java.util.Map;
import org.moe4j.Moe4jException;
import org.moe4j.simd.DType;
import org.moe4j.simd.Gemm;
import org.moe4j.simd.gemm.GemmKernel;

/**
 * GEMM on oneDNN's matmul primitive: {@code C = alpha * op(A) * op(B) + beta * C}, row-major as in {@link Gemm},
 * with A and B in float32 or bfloat16 and C (and the accumulation) in float32.
 *
 * <pre>
 * // A [m, k] (stored [k, m] when transA), B [k, n] (stored [n, k] when transB), C [m, n]; offsets and leading
 * // dimensions count elements of the operand's own type (2 bytes for bf16 A/B, 4 for C)
 * </pre>
 *
 * <p>One primitive per (m, n, k, transposes, leading dimensions, input type, alpha != 1, beta) — created on first
 * use with memory descriptors carrying the strides (a transposed operand is a stride permutation, no copy), a
 * user-owned scratchpad, alpha as a runtime src scale and beta as a sum post-op. Later calls with the same key
 * (every expert of a layer with the same token count, every step) only set three data handles and execute: no
 * allocation, the {@code dnnl_exec_arg_t} array is built once per primitive. The cache is cleared when it
 * reaches {@link #MAX_PLANS} entries.
 *
 * <p>Calls on one instance are serialised (its primitives share memory objects); use one instance per calling
 * thread for concurrent GEMMs. {@link #close()} frees every primitive, the stream and the engine.
 */
public final class OneDnnMatmul implements Gemm, AutoCloseable {
    public static final int MAX_PLANS = 4096;

    private final OneDnn.Bindings dnnl;
    private final OmpThreads omp;
    private final Arena arena = Arena.ofShared();
    private final MemorySegment engine;
    private final MemorySegment stream;
    private final Map<Key, Plan> plans = new HashMap<>();
    private final Key probe = new Key();
    private boolean closed;
    private long created;

    /** @param threads OpenMP threads for oneDNN calls, normally the engine's thread count; 0 = OpenMP default. */
    public OneDnnMatmul(int threads) {
        this.dnnl = OneDnn.bindings();
        this.omp = new OmpThreads(threads);
        try {
            MemorySegment cell = arena.allocate(ADDRESS);
            OneDnn.check((int) dnnl.engineCreate.invokeExact(cell, OneDnn.ENGINE_CPU, 0L), "dnnl_engine_create(cpu, 0)");
            engine = cell.get(ADDRESS, 0);
            OneDnn.check((int) dnnl.streamCreate.invokeExact(cell, engine, OneDnn.STREAM_DEFAULT_FLAGS),
                    "dnnl_stream_create");
            stream = cell.get(ADDRESS, 0);
        } catch (Throwable t) {
            arena.close();
            throw OneDnn.rethrow(t);
        }
    }

    @Override
    public String name() {
        return "onednn_matmul";
    }

    /** Primitives created so far (a test and benchmark figure: per-expert calls must not grow it). */
    public synchronized long primitivesCreated() {
        return created;
    }

    @Override
    public void sgemm(boolean transA, boolean transB, int m, int n, int k, float alpha,
                      MemorySegment a, long aOffset, int lda, MemorySegment b, long bOffset, int ldb,
                      float beta, MemorySegment c, long cOffset, int ldc) {
        matmul(DType.F32, transA, transB, m, n, k, alpha, a, aOffset, lda, b, bOffset, ldb, beta, c, cOffset, ldc);
    }

    /**
     * C = alpha * op(A) * op(B) + beta * C with A and B of type {@code inputs} (F32 or BF16) and C float32.
     * Throws NativeLibraryException when oneDNN has no implementation (bf16 on a CPU without bf16 support).
     */
    public synchronized void matmul(DType inputs, boolean transA, boolean transB, int m, int n, int k, float alpha,
                                    MemorySegment a, long aOffset, int lda, MemorySegment b, long bOffset, int ldb,
                                    float beta, MemorySegment c, long cOffset, int ldc) {
        if (closed) {
            throw new Moe4jException("OneDnnMatmul: used after close()");
        }
        if (inputs != DType.F32 && inputs != DType.BF16) {
            throw new Moe4jException("oneDNN matmul: input dtype " + inputs + ": expected F32 or BF16");
        }
        int es = inputs.byteSize();
        checkArgs(es, transA, transB, m, n, k, a, aOffset, lda, b, bOffset, ldb, c, cOffset, ldc);
        if (m == 0 || n == 0) {
            return;
        }
        if (k == 0) {
            GemmKernel.scale(m, n, beta, c, cOffset, ldc);
            return;
        }
        OneDnnGemm.requireNative(a, "GEMM operand A");
        OneDnnGemm.requireNative(b, "GEMM operand B");
        OneDnnGemm.requireNative(c, "GEMM operand C");
        omp.applyToCallingThread();
        probe.set(inputs, transA, transB, m, n, k, lda, ldb, ldc, alpha != 1f, beta);
        Plan p = plans.get(probe);
        if (p == null) {
            if (plans.size() >= MAX_PLANS) {
                clearPlans();
            }
            Key key = new Key();
            key.set(inputs, transA, transB, m, n, k, lda, ldb, ldc, alpha != 1f, beta);
            p = createPlan(key);
            plans.put(key, p);
        }
        try {
            OneDnn.check((int) dnnl.memorySetDataHandle.invokeExact(p.memA, a.address() + aOffset * es),
                    "dnnl_memory_set_data_handle(A)");
            OneDnn.check((int) dnnl.memorySetDataHandle.invokeExact(p.memB, b.address() + bOffset * es),
                    "dnnl_memory_set_data_handle(B)");
            OneDnn.check((int) dnnl.memorySetDataHandle.invokeExact(p.memC, c.address() + cOffset * 4),
                    "dnnl_memory_set_data_handle(C)");
            if (p.scale != null) {
                p.scale.set(JAVA_FLOAT, 0, alpha);
            }
            int st = (int) dnnl.primitiveExecute.invokeExact(p.primitive, stream, p.nargs, p.args);
            if (st != OneDnn.SUCCESS) {
                throw new NativeLibraryException("dnnl_primitive_execute(matmul " + p.key + ") failed: "
                        + OneDnn.statusName(st));
            }
            OneDnn.check((int) dnnl.streamWait.invokeExact(stream), "dnnl_stream_wait");
        } catch (Throwable t) {
            throw OneDnn.rethrow(t);
        }
    }

    private static void checkArgs(int es, boolean transA, boolean transB, int m, int n, int k,
                                  MemorySegment a, long aOffset, int lda, MemorySegment b, long bOffset, int ldb,
                                  MemorySegment c, long cOffset, int ldc) {
        if (es == 4) {
            GemmKernel.checkArgs(transA, transB, m, n, k, a, aOffset, lda, b, bOffset, ldb, c, cOffset, ldc);
            return;
        }
        // bf16 inputs: the float32 check with A and B extents measured in 2-byte elements
        GemmKernel.checkArgs(transA, transB, m, n, 0, a, aOffset, Math.max(lda, 1), b, bOffset, Math.max(ldb, 1),
                c, cOffset, ldc);
        int aCols = transA ? m : k;
        int bCols = transB ? k : n;
        if (k < 0 || lda < Math.max(1, aCols) || ldb < Math.max(1, bCols)) {
            throw new Moe4jException("oneDNN matmul: k " + k + ", lda " + lda + " (needs >= " + aCols
                    + "), ldb " + ldb + " (needs >= " + bCols + ")");
        }
        if (m > 0 && n > 0 && k > 0) {
            extent("A", a, aOffset, transA ? k : m, aCols, lda, es);
            extent("B", b, bOffset, transB ? n : k, bCols, ldb, es);
        }
    }

    private static void extent(String what, MemorySegment s, long off, int rows, int cols, int ld, int es) {
        long last = off + (long) (rows - 1) * ld + cols;
        if (s == null || last * es > s.byteSize()) {
            throw new Moe4jException("oneDNN matmul: operand " + what + " needs " + last + " elements (" + rows
                    + " rows of " + cols + ", ld " + ld + ", offset " + off + "), segment holds "
                    + (s == null ? "null" : String.valueOf(s.byteSize() / es)));
        }
    }

    private Plan createPlan(Key key) {
        int dt = key.bf16 ? OneDnn.DT_BF16 : OneDnn.DT_F32;
        MemorySegment attr = MemorySegment.NULL;
        MemorySegment pd = MemorySegment.NULL;
        MemorySegment mdA = MemorySegment.NULL;
        MemorySegment mdB = MemorySegment.NULL;
        MemorySegment mdC = MemorySegment.NULL;
        MemorySegment mdScale = MemorySegment.NULL;
        Plan p = new Plan(key);
        boolean ok = false;
        try (Arena tmp = Arena.ofConfined()) {
            MemorySegment cell = tmp.allocate(ADDRESS);
            mdA = memoryDesc(tmp, key.m, key.k, key.transA ? 1 : key.lda, key.transA ? key.lda : 1, dt);
            mdB = memoryDesc(tmp, key.k, key.n, key.transB ? 1 : key.ldb, key.transB ? key.ldb : 1, dt);
            mdC = memoryDesc(tmp, key.m, key.n, key.ldc, 1, OneDnn.DT_F32);

            OneDnn.check((int) dnnl.attrCreate.invokeExact(cell), "dnnl_primitive_attr_create");
            attr = cell.get(ADDRESS, 0);
            OneDnn.check((int) dnnl.attrSetScratchpadMode.invokeExact(attr, OneDnn.SCRATCHPAD_USER),
                    "dnnl_primitive_attr_set_scratchpad_mode(user)");
            if (key.scaled) {
                // alpha: one runtime f32 scale on src (mask 0), multiplied into the accumulator before the sum
                OneDnn.check((int) dnnl.attrSetScalesMask.invokeExact(attr, OneDnn.ARG_SRC, 0),
                        "dnnl_primitive_attr_set_scales_mask(src, 0)");
            }
            if (key.betaBits != 0) {
                // beta: dst = beta * dst_old + result (a sum post-op; beta == +0 has none: C is overwritten)
                OneDnn.check((int) dnnl.postOpsCreate.invokeExact(cell), "dnnl_post_ops_create");
                MemorySegment po = cell.get(ADDRESS, 0);
                try {
                    OneDnn.check((int) dnnl.postOpsAppendSum.invokeExact(po, Float.intBitsToFloat(key.betaBits), 0,
                            OneDnn.DT_UNDEF), "dnnl_post_ops_append_sum");
                    OneDnn.check((int) dnnl.attrSetPostOps.invokeExact(attr, po), "dnnl_primitive_attr_set_post_ops");
                } finally {
                    int ignored = (int) dnnl.postOpsDestroy.invokeExact(po);
                }
            }
            int st = (int) dnnl.matmulPrimitiveDescCreate.invokeExact(cell, engine, mdA, mdB, MemorySegment.NULL,
                    mdC, attr);
            if (st != OneDnn.SUCCESS) {
                throw new NativeLibraryException("dnnl_matmul_primitive_desc_create(" + key + ") failed: "
                        + OneDnn.statusName(st) + (st == OneDnn.UNIMPLEMENTED && key.bf16
                        ? " (this CPU/oneDNN build has no bf16 matmul; " + OneDnn.reason() + ")" : ""));
            }
            pd = cell.get(ADDRESS, 0);
            OneDnn.check((int) dnnl.primitiveCreate.invokeExact(cell, pd), "dnnl_primitive_create(matmul " + key + ")");
            p.primitive = cell.get(ADDRESS, 0);

            p.memA = memory(cell, mdA, MemorySegment.NULL);
            p.memB = memory(cell, mdB, MemorySegment.NULL);
            p.memC = memory(cell, mdC, MemorySegment.NULL);
            int nargs = 3;
            MemorySegment scratchMd = (MemorySegment) dnnl.primitiveDescQueryMd.invokeExact(pd,
                    OneDnn.QUERY_SCRATCHPAD_MD, 0);
            long scratchBytes = scratchMd.equals(MemorySegment.NULL) ? 0
                    : (long) dnnl.memoryDescGetSize.invokeExact(scratchMd);
            if (scratchBytes > 0) {
                p.scratch = p.arena.allocate(scratchBytes, 64);
                p.memScratch = memory(cell, scratchMd, p.scratch);
                nargs++;
            }
            if (key.scaled) {
                mdScale = memoryDesc1(tmp, OneDnn.DT_F32);
                p.scale = p.arena.allocate(JAVA_FLOAT);
                p.memScale = memory(cell, mdScale, p.scale);
                nargs++;
            }
            // dnnl_exec_arg_t { int arg; dnnl_memory_t memory; }: 16 bytes, the pointer at offset 8
            p.nargs = nargs;
            p.args = p.arena.allocate(16L * nargs, 8);
            int i = 0;
            i = putArg(p.args, i, OneDnn.ARG_SRC, p.memA);
            i = putArg(p.args, i, OneDnn.ARG_WEIGHTS, p.memB);
            i = putArg(p.args, i, OneDnn.ARG_DST, p.memC);
            if (p.memScratch != null) {
                i = putArg(p.args, i, OneDnn.ARG_SCRATCHPAD, p.memScratch);
            }
            if (p.memScale != null) {
                putArg(p.args, i, OneDnn.ARG_ATTR_SCALES | OneDnn.ARG_SRC, p.memScale);
            }
            created++;
            ok = true;
            return p;
        } catch (Throwable t) {
            throw OneDnn.rethrow(t);
        } finally {
            try {
                destroy(dnnl.primitiveDescDestroy, pd);
                destroy(dnnl.attrDestroy, attr);
                destroy(dnnl.memoryDescDestroy, mdA);
                destroy(dnnl.memoryDescDestroy, mdB);
                destroy(dnnl.memoryDescDestroy, mdC);
                destroy(dnnl.memoryDescDestroy, mdScale);
                if (!ok) {
                    p.destroy(dnnl);
                }
            } catch (Throwable t) {
                throw OneDnn.rethrow(t);
            }
        }
    }

    private static int putArg(MemorySegment args, int i, int arg, MemorySegment memory) {
        args.set(JAVA_INT, 16L * i, arg);
        args.set(ADDRESS, 16L * i + 8, memory);
        return i + 1;
    }

    /** A 2-D [rows, cols] descriptor with the given row and column strides (in elements). */
    private MemorySegment memoryDesc(Arena tmp, int rows, int cols, long rowStride, long colStride, int dt)
            throws Throwable {
        MemorySegment cell = tmp.allocate(ADDRESS);
        MemorySegment dims = tmp.allocate(JAVA_LONG, 2);
        MemorySegment strides = tmp.allocate(JAVA_LONG, 2);
        dims.setAtIndex(JAVA_LONG, 0, rows);
        dims.setAtIndex(JAVA_LONG, 1, cols);
        strides.setAtIndex(JAVA_LONG, 0, rowStride);
        strides.setAtIndex(JAVA_LONG, 1, colStride);
        OneDnn.check((int) dnnl.memoryDescCreateWithStrides.invokeExact(cell, 2, dims, dt, strides),
                "dnnl_memory_desc_create_with_strides([" + rows + ", " + cols + "], strides [" + rowStride + ", "
                        + colStride + "])");
        return cell.get(ADDRESS, 0);
    }

    /** A 1-D [1] descriptor: the scale argument. */
    private MemorySegment memoryDesc1(Arena tmp, int dt) throws Throwable {
        MemorySegment cell = tmp.allocate(ADDRESS);
        MemorySegment one = tmp.allocate(JAVA_LONG, 1);
        one.set(JAVA_LONG, 0, 1);
        OneDnn.check((int) dnnl.memoryDescCreateWithStrides.invokeExact(cell, 1, one, dt, one),
                "dnnl_memory_desc_create_with_strides([1])");
        return cell.get(ADDRESS, 0);
    }

    private MemorySegment memory(MemorySegment cell, MemorySegment md, MemorySegment handle) throws Throwable {
        OneDnn.check((int) dnnl.memoryCreate.invokeExact(cell, md, engine, handle), "dnnl_memory_create");
        return cell.get(ADDRESS, 0);
    }

    private static void destroy(java.lang.invoke.MethodHandle h, MemorySegment handle) throws Throwable {
        if (handle != null && !handle.equals(MemorySegment.NULL)) {
            int ignored = (int) h.invokeExact(handle);
        }
    }

    private void clearPlans() {
        for (Plan p : plans.values()) {
            try {
                p.destroy(dnnl);
            } catch (Throwable t) {
                throw OneDnn.rethrow(t);
            }
        }
        plans.clear();
    }

    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        try {
            clearPlans();
            destroy(dnnl.streamDestroy, stream);
            destroy(dnnl.engineDestroy, engine);
        } catch (Throwable t) {
            throw OneDnn.rethrow(t);
        } finally {
            arena.close();
        }
    }

    /** The cache key; one mutable instance serves as the lookup probe so that a hit allocates nothing. */
    static final class Key {
        boolean bf16;
        boolean transA;
        boolean transB;
        int m;
        int n;
        int k;
        int lda;
        int ldb;
        int ldc;
        boolean scaled;
        int betaBits;

        void set(DType inputs, boolean transA, boolean transB, int m, int n, int k, int lda, int ldb, int ldc,
                 boolean scaled, float beta) {
            this.bf16 = inputs == DType.BF16;
            this.transA = transA;
            this.transB = transB;
            this.m = m;
            this.n = n;
            this.k = k;
            this.lda = lda;
            this.ldb = ldb;
            this.ldc = ldc;
            this.scaled = scaled;
            // -0.0 and +0.0 both mean "overwrite C"
            this.betaBits = beta == 0f ? 0 : Float.floatToIntBits(beta);
        }

        @Override
        public boolean equals(Object o) {
            return o instanceof Key q && bf16 == q.bf16 && transA == q.transA && transB == q.transB && m == q.m
                    && n == q.n && k == q.k && lda == q.lda && ldb == q.ldb && ldc == q.ldc && scaled == q.scaled
                    && betaBits == q.betaBits;
        }

        @Override
        public int hashCode() {
            int h = (bf16 ? 1 : 0) | (transA ? 2 : 0) | (transB ? 4 : 0) | (scaled ? 8 : 0);
            h = 31 * h + m;
            h = 31 * h + n;
            h = 31 * h + k;
            h = 31 * h + lda;
            h = 31 * h + ldb;
            h = 31 * h + ldc;
            return 31 * h + betaBits;
        }

        @Override
        public String toString() {
            return (bf16 ? "bf16" : "f32") + " " + (transA ? "T" : "N") + (transB ? "T" : "N") + " m " + m + " n " + n
                    + " k " + k + " lda " + lda + " ldb " + ldb + " ldc " + ldc + (scaled ? " alpha" : "")
                    + (betaBits != 0 ? " beta " + Float.intBitsToFloat(betaBits) : "");
        }
    }

    /** One primitive with its memory objects, scratchpad and argument array. */
    static final class Plan {
        final Key key;
        /** Scratchpad, scale cell and argument array; freed with the primitive. */
        final Arena arena = Arena.ofShared();
        MemorySegment primitive;
        MemorySegment memA;
        MemorySegment memB;
        MemorySegment memC;
        MemorySegment memScratch;
        MemorySegment memScale;
        MemorySegment scratch;
        MemorySegment scale;
        MemorySegment args;
        int nargs;

        Plan(Key key) {
            this.key = key;
        }

        void destroy(OneDnn.Bindings dnnl) throws Throwable {
            OneDnnMatmul.destroy(dnnl.memoryDestroy, memA);
            OneDnnMatmul.destroy(dnnl.memoryDestroy, memB);
            OneDnnMatmul.destroy(dnnl.memoryDestroy, memC);
            OneDnnMatmul.destroy(dnnl.memoryDestroy, memScratch);
            OneDnnMatmul.destroy(dnnl.memoryDestroy, memScale);
            OneDnnMatmul.destroy(dnnl.primitiveDestroy, primitive);
            memA = memB = memC = memScratch = memScale = primitive = null;
            arena.close();
        }
    }
}
