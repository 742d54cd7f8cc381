package org.moe4j.nativ;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import org.moe4j.Moe4jException;
import org.moe4j.simd.Gemm;
import org.moe4j.simd.gemm.GemmKernel;

/**
 * GEMM on cuBLAS, two ways:
 *
 * <ul>
 *   <li>{@link Gemm#sgemm} on host segments: copies op(A), op(B) (and C when beta != 0) to the device, runs one
 *   cublasSgemm and copies C back, on this instance's stream, then waits. The copies cost more than the product
 *   for all but large shapes on a PCIe GPU: this form exists for the interface and for tests.</li>
 *   <li>Device-resident ({@code *Device} methods): operands already in device memory ({@link Cuda.DeviceBuffer}
 *   addresses), calls enqueued on the stream without waiting; {@link #synchronize()} waits. This is what an
 *   engine that keeps weights on the GPU would use: sgemm, bf16 x bf16 -> f32 (cublasGemmEx with
 *   CUBLAS_COMPUTE_32F), and strided-batched sgemm for experts of equal token counts.</li>
 * </ul>
 *
 * <p>Row-major throughout, as in {@link Gemm}. cuBLAS is column-major; a row-major [r, c] matrix with row stride
 * ld is, read column-major, its transpose [c, r] with leading dimension ld. So row-major
 * {@code C[m,n] = op(A) op(B)} is column-major {@code C^T[n,m] = op(B)^T op(A)^T}: call cuBLAS with the operands
 * swapped, (n, m, k), B's transpose flag first, and the leading dimensions unchanged.
 *
 * <p>Calls on one instance are serialised. {@link #close()} frees the device buffers, the cuBLAS handle and the
 * stream.
 */
public final class CudaGemm implements Gemm, AutoCloseable {
    private final Cuda.Bindings cu;
    private final Arena arena = Arena.ofShared();
    private final MemorySegment stream;
    private final MemorySegment handle;
    private final MemorySegment alphaCell;
    private final MemorySegment betaCell;
    private Cuda.DeviceBuffer devA;
    private Cuda.DeviceBuffer devB;
    private Cuda.DeviceBuffer devC;
    private boolean closed;

    public CudaGemm() {
        this.cu = Cuda.bindings();
        try {
            MemorySegment cell = arena.allocate(ADDRESS);
            Cuda.checkCuda((int) cu.streamCreate.invokeExact(cell), "cudaStreamCreate");
            stream = cell.get(ADDRESS, 0);
            Cuda.checkCublas((int) cu.cublasCreate.invokeExact(cell), "cublasCreate_v2");
            handle = cell.get(ADDRESS, 0);
            Cuda.checkCublas((int) cu.cublasSetStream.invokeExact(handle, stream), "cublasSetStream_v2");
        } catch (Throwable t) {
            arena.close();
            throw OneDnn.rethrow(t);
        }
        alphaCell = arena.allocate(JAVA_FLOAT);
        betaCell = arena.allocate(JAVA_FLOAT);
    }

    @Override
    public String name() {
        return "cuda";
    }

    @Override
    public synchronized void sgemm(boolean transA, boolean transB, int m, int n, int k, float alpha,
                                   MemorySegment a, long aOffset, int lda, MemorySegment b, long bOffset, int ldb,
                                   float beta, MemorySegment c, long cOffset, int ldc) {
        open();
        GemmKernel.checkArgs(transA, transB, m, n, k, a, aOffset, lda, b, bOffset, ldb, c, cOffset, ldc);
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
        // pack each operand densely on the device: stored rows x cols, leading dimension cols
        int aRows = transA ? k : m;
        int aCols = transA ? m : k;
        int bRows = transB ? n : k;
        int bCols = transB ? k : n;
        devA = ensure(devA, 4L * aRows * aCols);
        devB = ensure(devB, 4L * bRows * bCols);
        devC = ensure(devC, 4L * m * n);
        copy2D(devA.address(), 4L * aCols, a.address() + 4 * aOffset, 4L * lda, 4L * aCols, aRows, Cuda.H2D);
        copy2D(devB.address(), 4L * bCols, b.address() + 4 * bOffset, 4L * ldb, 4L * bCols, bRows, Cuda.H2D);
        if (beta != 0f) {
            copy2D(devC.address(), 4L * n, c.address() + 4 * cOffset, 4L * ldc, 4L * n, m, Cuda.H2D);
        }
        sgemmDevice(transA, transB, m, n, k, alpha, devA.address(), aCols, devB.address(), bCols, beta,
                devC.address(), n);
        // back into C's window only: the row padding between ldc and n is left untouched
        copy2D(c.address() + 4 * cOffset, 4L * ldc, devC.address(), 4L * n, 4L * n, m, Cuda.D2H);
        synchronize();
    }

    /**
     * Enqueues row-major {@code C = alpha op(A) op(B) + beta C} on device pointers (float32, leading dimensions in
     * elements, as in {@link Gemm}). With beta == 0, C need not be initialised.
     */
    public synchronized void sgemmDevice(boolean transA, boolean transB, int m, int n, int k, float alpha,
                                         long a, int lda, long b, int ldb, float beta, long c, int ldc) {
        open();
        checkDims(transA, transB, m, n, k, lda, ldb, ldc);
        alphaCell.set(JAVA_FLOAT, 0, alpha);
        betaCell.set(JAVA_FLOAT, 0, beta);
        try {
            Cuda.checkCublas((int) cu.sgemm.invokeExact(handle, transB ? Cuda.OP_T : Cuda.OP_N,
                    transA ? Cuda.OP_T : Cuda.OP_N, n, m, k, alphaCell, b, ldb, a, lda, betaCell, c, ldc),
                    "cublasSgemm_v2(m " + m + ", n " + n + ", k " + k + ")");
        } catch (Throwable t) {
            throw OneDnn.rethrow(t);
        }
    }

    /**
     * Enqueues row-major {@code C = alpha op(A) op(B) + beta C} with A and B bfloat16 and C float32, accumulated in
     * float32 (cublasGemmEx, CUDA_R_16BF inputs, CUBLAS_COMPUTE_32F). Leading dimensions in elements.
     */
    public synchronized void gemmBf16Device(boolean transA, boolean transB, int m, int n, int k, float alpha,
                                            long a, int lda, long b, int ldb, float beta, long c, int ldc) {
        open();
        checkDims(transA, transB, m, n, k, lda, ldb, ldc);
        alphaCell.set(JAVA_FLOAT, 0, alpha);
        betaCell.set(JAVA_FLOAT, 0, beta);
        try {
            Cuda.checkCublas((int) cu.gemmEx.invokeExact(handle, transB ? Cuda.OP_T : Cuda.OP_N,
                    transA ? Cuda.OP_T : Cuda.OP_N, n, m, k, alphaCell, b, Cuda.CUDA_R_16BF, ldb, a, Cuda.CUDA_R_16BF,
                    lda, betaCell, c, Cuda.CUDA_R_32F, ldc, Cuda.CUBLAS_COMPUTE_32F, Cuda.CUBLAS_GEMM_DEFAULT),
                    "cublasGemmEx(bf16, m " + m + ", n " + n + ", k " + k + ")");
        } catch (Throwable t) {
            throw OneDnn.rethrow(t);
        }
    }

    /**
     * Enqueues {@code batch} row-major float32 GEMMs: product i reads A at {@code a + 4 * i * strideA} (strides in
     * elements) and likewise B and C. Experts with equal token counts in one call.
     */
    public synchronized void sgemmStridedBatchedDevice(boolean transA, boolean transB, int m, int n, int k,
                                                       float alpha, long a, int lda, long strideA, long b, int ldb,
                                                       long strideB, float beta, long c, int ldc, long strideC,
                                                       int batch) {
        open();
        checkDims(transA, transB, m, n, k, lda, ldb, ldc);
        if (batch < 0 || strideA < 0 || strideB < 0 || strideC < 0) {
            throw new Moe4jException("cuBLAS sgemmStridedBatched: batch " + batch + ", strides " + strideA + ", " + strideB
                    + ", " + strideC + ": each must be >= 0");
        }
        alphaCell.set(JAVA_FLOAT, 0, alpha);
        betaCell.set(JAVA_FLOAT, 0, beta);
        try {
            Cuda.checkCublas((int) cu.sgemmStridedBatched.invokeExact(handle, transB ? Cuda.OP_T : Cuda.OP_N,
                    transA ? Cuda.OP_T : Cuda.OP_N, n, m, k, alphaCell, b, ldb, strideB, a, lda, strideA, betaCell,
                    c, ldc, strideC, batch), "cublasSgemmStridedBatched(m " + m + ", n " + n + ", k " + k
                    + ", batch " + batch + ")");
        } catch (Throwable t) {
            throw OneDnn.rethrow(t);
        }
    }

    /** Waits for everything enqueued on this instance's stream. */
    public synchronized void synchronize() {
        open();
        try {
            Cuda.checkCuda((int) cu.streamSynchronize.invokeExact(stream), "cudaStreamSynchronize");
        } catch (Throwable t) {
            throw OneDnn.rethrow(t);
        }
    }

    private static void checkDims(boolean transA, boolean transB, int m, int n, int k, int lda, int ldb, int ldc) {
        if (m < 0 || n < 0 || k < 0) {
            throw new Moe4jException("cuBLAS GEMM: m " + m + ", n " + n + ", k " + k + ": each must be >= 0");
        }
        if (lda < Math.max(1, transA ? m : k) || ldb < Math.max(1, transB ? k : n) || ldc < Math.max(1, n)) {
            throw new Moe4jException("cuBLAS GEMM: lda " + lda + ", ldb " + ldb + ", ldc " + ldc
                    + " too small for m " + m + ", n " + n + ", k " + k + (transA ? ", A^T" : "")
                    + (transB ? ", B^T" : ""));
        }
    }

    private void copy2D(long dst, long dpitch, long src, long spitch, long width, long height, int kind) {
        try {
            Cuda.checkCuda((int) cu.memcpy2DAsync.invokeExact(dst, dpitch, src, spitch, width, height, kind, stream),
                    "cudaMemcpy2DAsync(" + height + " rows of " + width + " bytes)");
        } catch (Throwable t) {
            throw OneDnn.rethrow(t);
        }
    }

    /** A device buffer of at least {@code bytes}, grown (to 1.5x) only when too small. */
    private Cuda.DeviceBuffer ensure(Cuda.DeviceBuffer buf, long bytes) {
        if (buf != null && buf.byteSize() >= bytes) {
            return buf;
        }
        if (buf != null) {
            synchronize(); // earlier work may still read it
            buf.close();
        }
        return Cuda.allocate(Math.max(bytes, buf == null ? bytes : buf.byteSize() + buf.byteSize() / 2));
    }

    private void open() {
        if (closed) {
            throw new Moe4jException("CudaGemm: used after close()");
        }
    }

    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        try {
            synchronize();
        } finally {
            closed = true;
            for (Cuda.DeviceBuffer d : new Cuda.DeviceBuffer[] {devA, devB, devC}) {
                if (d != null) {
                    d.close();
                }
            }
            try {
                Cuda.checkCublas((int) cu.cublasDestroy.invokeExact(handle), "cublasDestroy_v2");
                Cuda.checkCuda((int) cu.streamDestroy.invokeExact(stream), "cudaStreamDestroy");
            } catch (Throwable t) {
                throw OneDnn.rethrow(t);
            } finally {
                arena.close();
            }
        }
    }
}
