package org.moe4j.nativ;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.moe4j.Moe4jException;

/**
 * The CUDA runtime ({@code libcudart}) and cuBLAS ({@code libcublas}) bound through FFM by soname: nothing CUDA is
 * needed at build time. Sonames tried in order: {@code .so.13}, {@code .so.12}, {@code .so.11(.0)}, plain {@code .so}; with
 * {@code -Dmoe4j.cuda.libdir=/usr/local/cuda/lib64} that folder is tried first.
 *
 * <p>Loading happens once, on first use. Without the libraries or without a device, {@link #available()} is
 * false and {@link #reason()} says why (one INFO line is logged); nothing throws.
 *
 * <p>Device pointers are carried as {@code long} (raw addresses in the device's space) and bound as
 * {@code JAVA_LONG}; host pointers to alpha/beta as {@code ADDRESS} (cuBLAS's default host pointer mode).
 */
public final class Cuda {
    public static final String LIBDIR_PROPERTY = "moe4j.cuda.libdir";

    // enum cudaMemcpyKind
    static final int H2D = 1;
    static final int D2H = 2;
    static final int D2D = 3;
    // cublasOperation_t
    static final int OP_N = 0;
    static final int OP_T = 1;
    // cudaDataType_t
    static final int CUDA_R_32F = 0;
    static final int CUDA_R_16BF = 14;
    // cublasComputeType_t
    static final int CUBLAS_COMPUTE_32F = 68;
    // cublasGemmAlgo_t
    static final int CUBLAS_GEMM_DEFAULT = -1;

    private static final Bindings B;
    private static final String REASON;

    static {
        Bindings b = null;
        String reason;
        try {
            b = new Bindings();
            reason = "CUDA: " + b.devices + " device(s), " + b.origin;
        } catch (NativeLibraryException e) {
            reason = e.getMessage();
        } catch (RuntimeException | LinkageError e) {
            reason = "CUDA could not be bound: " + e;
        }
        B = b;
        REASON = reason;
    }

    private Cuda() {
    }

    /** True when libcudart and libcublas loaded, every symbol was found and at least one device is visible. */
    public static boolean available() {
        return B != null;
    }

    /** Why CUDA is unavailable, or which libraries were loaded and how many devices there are. */
    public static String reason() {
        return REASON;
    }

    static Bindings bindings() {
        if (B == null) {
            throw new NativeLibraryException("CUDA is not available: " + REASON);
        }
        return B;
    }

    /** Throws a NativeLibraryException naming the call and cudaGetErrorString's text when err != cudaSuccess. */
    static void checkCuda(int err, String call) {
        if (err != 0) {
            String text;
            try {
                MemorySegment s = (MemorySegment) bindings().getErrorString.invokeExact(err);
                text = reinterpretString(s);
            } catch (Throwable t) {
                text = "?";
            }
            throw new NativeLibraryException(call + " failed: cudaError " + err + " (" + text + ")");
        }
    }

    @SuppressWarnings("restricted")
    private static String reinterpretString(MemorySegment s) {
        return s.equals(MemorySegment.NULL) ? "?" : s.reinterpret(256).getString(0);
    }

    static void checkCublas(int status, String call) {
        if (status != 0) {
            throw new NativeLibraryException(call + " failed: " + cublasStatusName(status));
        }
    }

    static String cublasStatusName(int s) {
        return switch (s) {
            case 1 -> "CUBLAS_STATUS_NOT_INITIALIZED";
            case 3 -> "CUBLAS_STATUS_ALLOC_FAILED";
            case 7 -> "CUBLAS_STATUS_INVALID_VALUE";
            case 8 -> "CUBLAS_STATUS_ARCH_MISMATCH";
            case 11 -> "CUBLAS_STATUS_MAPPING_ERROR";
            case 13 -> "CUBLAS_STATUS_EXECUTION_FAILED";
            case 14 -> "CUBLAS_STATUS_INTERNAL_ERROR";
            case 15 -> "CUBLAS_STATUS_NOT_SUPPORTED";
            case 16 -> "CUBLAS_STATUS_LICENSE_ERROR";
            default -> "cublasStatus " + s;
        };
    }

    /** Allocates {@code bytes} of device memory (cudaMalloc); close() frees it. */
    public static DeviceBuffer allocate(long bytes) {
        return new DeviceBuffer(bytes);
    }

    /** Device memory from cudaMalloc; {@link #address()} is the device pointer. Not thread-safe to close twice. */
    public static final class DeviceBuffer implements AutoCloseable {
        private long ptr;
        private final long bytes;

        DeviceBuffer(long bytes) {
            if (bytes <= 0) {
                throw new Moe4jException("cudaMalloc: bytes = " + bytes + ": must be > 0");
            }
            Bindings b = bindings();
            try (Arena a = Arena.ofConfined()) {
                MemorySegment cell = a.allocate(ADDRESS);
                checkCuda((int) b.malloc.invokeExact(cell, bytes), "cudaMalloc(" + bytes + ")");
                ptr = cell.get(JAVA_LONG, 0);
            } catch (Throwable t) {
                throw OneDnn.rethrow(t);
            }
            this.bytes = bytes;
        }

        public long address() {
            if (ptr == 0) {
                throw new Moe4jException("CUDA device buffer: used after close()");
            }
            return ptr;
        }

        public long byteSize() {
            return bytes;
        }

        /** Synchronous copy of {@code n} bytes from host {@code src} at byte {@code srcOff} to this at {@code dstOff}. */
        public void copyFromHost(MemorySegment src, long srcOff, long dstOff, long n) {
            range(dstOff, n);
            OneDnnGemm.requireNative(src, "copyFromHost: the host source");
            if (srcOff < 0 || srcOff + n > src.byteSize()) {
                throw new Moe4jException("copyFromHost: host range [" + srcOff + ", " + (srcOff + n)
                        + ") outside a segment of " + src.byteSize() + " bytes");
            }
            try {
                checkCuda((int) bindings().memcpy.invokeExact(address() + dstOff, src.address() + srcOff, n, H2D),
                        "cudaMemcpy(host to device, " + n + " bytes)");
            } catch (Throwable t) {
                throw OneDnn.rethrow(t);
            }
        }

        /** Synchronous copy of {@code n} bytes from this at {@code srcOff} to host {@code dst} at {@code dstOff}. */
        public void copyToHost(long srcOff, MemorySegment dst, long dstOff, long n) {
            range(srcOff, n);
            OneDnnGemm.requireNative(dst, "copyToHost: the host destination");
            if (dstOff < 0 || dstOff + n > dst.byteSize()) {
                throw new Moe4jException("copyToHost: host range [" + dstOff + ", " + (dstOff + n)
                        + ") outside a segment of " + dst.byteSize() + " bytes");
            }
            try {
                checkCuda((int) bindings().memcpy.invokeExact(dst.address() + dstOff, address() + srcOff, n, D2H),
                        "cudaMemcpy(device to host, " + n + " bytes)");
            } catch (Throwable t) {
                throw OneDnn.rethrow(t);
            }
        }

        private void range(long off, long n) {
            if (off < 0 || n < 0 || off + n > bytes) {
                throw new Moe4jException("CUDA device buffer: range [" + off + ", " + (off + n) + ") outside a buffer of "
                        + bytes + " bytes");
            }
        }

        @Override
        public void close() {
            if (ptr != 0) {
                long p = ptr;
                ptr = 0;
                try {
                    checkCuda((int) bindings().free.invokeExact(p), "cudaFree");
                } catch (Throwable t) {
                    throw OneDnn.rethrow(t);
                }
            }
        }
    }

    /** Handles for the CUDA runtime and cuBLAS entry points used here (CUDA 11 to 13: these signatures did not change). */
    static final class Bindings {
        final String origin;
        final int devices;
        // cudaError_t cudaGetDeviceCount(int *count)
        final MethodHandle getDeviceCount;
        // const char *cudaGetErrorString(cudaError_t error)
        final MethodHandle getErrorString;
        // cudaError_t cudaMalloc(void **devPtr, size_t size)
        final MethodHandle malloc;
        // cudaError_t cudaFree(void *devPtr)
        final MethodHandle free;
        // cudaError_t cudaMemcpy(void *dst, const void *src, size_t count, cudaMemcpyKind kind)
        final MethodHandle memcpy;
        // cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
        //     size_t height, cudaMemcpyKind kind, cudaStream_t stream)
        final MethodHandle memcpy2DAsync;
        // cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, cudaMemcpyKind kind, cudaStream_t s)
        final MethodHandle memcpyAsync;
        // cudaError_t cudaStreamCreate(cudaStream_t *stream)
        final MethodHandle streamCreate;
        // cudaError_t cudaStreamSynchronize(cudaStream_t stream)
        final MethodHandle streamSynchronize;
        // cudaError_t cudaStreamDestroy(cudaStream_t stream)
        final MethodHandle streamDestroy;
        // cublasStatus_t cublasCreate_v2(cublasHandle_t *handle)
        final MethodHandle cublasCreate;
        // cublasStatus_t cublasDestroy_v2(cublasHandle_t handle)
        final MethodHandle cublasDestroy;
        // cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t streamId)
        final MethodHandle cublasSetStream;
        // cublasStatus_t cublasSgemm_v2(handle, cublasOperation_t transa, transb, int m, int n, int k,
        //     const float *alpha, const float *A, int lda, const float *B, int ldb, const float *beta, float *C, int ldc)
        final MethodHandle sgemm;
        // cublasStatus_t cublasGemmEx(handle, transa, transb, int m, int n, int k, const void *alpha,
        //     const void *A, cudaDataType Atype, int lda, const void *B, cudaDataType Btype, int ldb,
        //     const void *beta, void *C, cudaDataType Ctype, int ldc, cublasComputeType_t computeType,
        //     cublasGemmAlgo_t algo)
        final MethodHandle gemmEx;
        // cublasStatus_t cublasSgemmStridedBatched(handle, transa, transb, int m, int n, int k, const float *alpha,
        //     const float *A, int lda, long long strideA, const float *B, int ldb, long long strideB,
        //     const float *beta, float *C, int ldc, long long strideC, int batchCount)
        final MethodHandle sgemmStridedBatched;

        @SuppressWarnings("restricted")
        Bindings() {
            List<String> tried = new ArrayList<>();
            String dir = System.getProperty(LIBDIR_PROPERTY);
            SymbolLookup rt = open(dir, List.of("libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0",
                    "libcudart.so"), tried);
            if (rt == null) {
                throw new NativeLibraryException("no libcudart found (tried " + String.join(", ", tried)
                        + "); install the CUDA runtime or set -D" + LIBDIR_PROPERTY);
            }
            Linker linker = Linker.nativeLinker();
            getDeviceCount = handle(linker, rt, "cudaGetDeviceCount", FunctionDescriptor.of(JAVA_INT, ADDRESS));
            getErrorString = handle(linker, rt, "cudaGetErrorString", FunctionDescriptor.of(ADDRESS, JAVA_INT));
            malloc = handle(linker, rt, "cudaMalloc", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG));
            free = handle(linker, rt, "cudaFree", FunctionDescriptor.of(JAVA_INT, JAVA_LONG));
            memcpy = handle(linker, rt, "cudaMemcpy", FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_LONG,
                    JAVA_INT));
            memcpy2DAsync = handle(linker, rt, "cudaMemcpy2DAsync", FunctionDescriptor.of(JAVA_INT, JAVA_LONG,
                    JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_INT, ADDRESS));
            memcpyAsync = handle(linker, rt, "cudaMemcpyAsync", FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_LONG,
                    JAVA_LONG, JAVA_INT, ADDRESS));
            streamCreate = handle(linker, rt, "cudaStreamCreate", FunctionDescriptor.of(JAVA_INT, ADDRESS));
            streamSynchronize = handle(linker, rt, "cudaStreamSynchronize", FunctionDescriptor.of(JAVA_INT, ADDRESS));
            streamDestroy = handle(linker, rt, "cudaStreamDestroy", FunctionDescriptor.of(JAVA_INT, ADDRESS));
            int n;
            int err;
            try (Arena a = Arena.ofConfined()) {
                MemorySegment cell = a.allocate(JAVA_INT);
                err = (int) getDeviceCount.invokeExact(cell);
                n = cell.get(JAVA_INT, 0);
            } catch (Throwable t) {
                throw OneDnn.rethrow(t);
            }
            if (err != 0 || n <= 0) {
                String text;
                try {
                    MemorySegment s = (MemorySegment) getErrorString.invokeExact(err);
                    text = reinterpretString(s);
                } catch (Throwable t) {
                    text = "?";
                }
                throw new NativeLibraryException(String.join(" + ", loadedNames) + " loaded but no usable device: "
                        + "cudaGetDeviceCount returned " + err + " (" + text + "), " + n + " device(s)");
            }
            devices = n;
            SymbolLookup blas = open(dir, List.of("libcublas.so.13", "libcublas.so.12", "libcublas.so.11",
                    "libcublas.so"), tried);
            if (blas == null) {
                throw new NativeLibraryException("no libcublas found (tried " + String.join(", ", tried)
                        + "); install cuBLAS or set -D" + LIBDIR_PROPERTY);
            }
            origin = String.join(" + ", loadedNames);
            cublasCreate = handle(linker, blas, "cublasCreate_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS));
            cublasDestroy = handle(linker, blas, "cublasDestroy_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS));
            cublasSetStream = handle(linker, blas, "cublasSetStream_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS,
                    ADDRESS));
            sgemm = handle(linker, blas, "cublasSgemm_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT,
                    JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT, JAVA_LONG, JAVA_INT, ADDRESS,
                    JAVA_LONG, JAVA_INT));
            gemmEx = handle(linker, blas, "cublasGemmEx", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT,
                    JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_INT,
                    JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT));
            sgemmStridedBatched = handle(linker, blas, "cublasSgemmStridedBatched", FunctionDescriptor.of(JAVA_INT,
                    ADDRESS, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT, JAVA_LONG,
                    JAVA_LONG, JAVA_INT, JAVA_LONG, ADDRESS, JAVA_LONG, JAVA_INT, JAVA_LONG, JAVA_INT));
        }

        private final List<String> loadedNames = new ArrayList<>();

        /** dlopen by soname (or from dir first); the first that loads wins. */
        @SuppressWarnings("restricted")
        private SymbolLookup open(String dir, List<String> sonames, List<String> tried) {
            for (String so : sonames) {
                List<String> candidates = dir == null || dir.isBlank() ? List.of(so)
                        : List.of(Path.of(dir, so).toString(), so);
                for (String c : candidates) {
                    tried.add(c);
                    try {
                        SymbolLookup l = c.contains("/") ? SymbolLookup.libraryLookup(Path.of(c), Arena.global())
                                : SymbolLookup.libraryLookup(c, Arena.global());
                        loadedNames.add(c);
                        return l;
                    } catch (IllegalArgumentException e) {
                        // not there: try the next name
                    }
                }
            }
            return null;
        }

        @SuppressWarnings("restricted")
        private static MethodHandle handle(Linker linker, SymbolLookup l, String name, FunctionDescriptor fd) {
            MemorySegment sym = l.find(name).orElseThrow(() -> new NativeLibraryException(
                    "symbol " + name + " not found in the loaded CUDA libraries (expected CUDA 11 to 13)"));
            return linker.downcallHandle(sym, fd);
        }
    }
}
