package org.moe4j.nativ;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;
import org.moe4j.Moe4jException;

/**
 * oneDNN 3.x bound through FFM: loading (via {@link NativeLibraries}), the C entry points this module uses, and
 * the constants from {@code dnnl_types.h} / {@code dnnl_common_types.h} they take.
 *
 * <p>Loading happens once, on first use of this class. If it fails, {@link #available()} is false,
 * {@link #reason()} says why, and callers fall back to Java; nothing here throws out of the static initialiser and
 * nothing is logged here: {@link GemmBackends} logs its choice, with this reason, as one WARNING line.
 *
 * <p>Pointer arguments on the per-call paths ({@code dnnl_sgemm}, {@code dnnl_memory_set_data_handle}) are bound
 * as {@code JAVA_LONG} raw addresses so that a call allocates no slice objects; the caller keeps the segments
 * alive for the duration of the call (as with any GEMM argument).
 */
public final class OneDnn {
    // dnnl_status_t
    static final int SUCCESS = 0;
    static final int UNIMPLEMENTED = 3;
    // dnnl_engine_kind_t
    static final int ENGINE_CPU = 1;
    // dnnl_data_type_t
    static final int DT_UNDEF = 0;
    static final int DT_BF16 = 2;
    static final int DT_F32 = 3;
    // dnnl_stream_flags_t: dnnl_stream_default_flags = dnnl_stream_in_order
    static final int STREAM_DEFAULT_FLAGS = 1;
    // dnnl_scratchpad_mode_t
    static final int SCRATCHPAD_USER = 1;
    // dnnl_query_t
    static final int QUERY_SCRATCHPAD_MD = 136;
    // execution argument indices (DNNL_ARG_*)
    static final int ARG_SRC = 1;
    static final int ARG_DST = 17;
    static final int ARG_WEIGHTS = 33;
    static final int ARG_SCRATCHPAD = 80;
    static final int ARG_ATTR_SCALES = 4096;
    // dnnl_cpu_isa_t: avx512_core_bf16 = 0xe7; every later x86 ISA value contains its bits
    static final int ISA_AVX512_CORE_BF16 = 0xe7;
    static final int ISA_AVX2_VNNI_2 = 0x1f;

    private static final Bindings B;
    private static final String REASON;

    static {
        Bindings b = null;
        String reason;
        try {
            NativeLibraries.Loaded lib = NativeLibraries.loadDnnl(NativeLibraries.DnnlSource.fromEnvironment());
            b = new Bindings(lib);
            reason = "oneDNN " + b.version + " (" + lib.origin() + "), ISA " + isaName(b.isa);
        } catch (NativeLibraryException e) {
            reason = e.getMessage();
        } catch (RuntimeException | LinkageError e) {
            reason = "oneDNN could not be bound: " + e;
        }
        B = b;
        REASON = reason;
    }

    private OneDnn() {
    }

    /** True when libdnnl (and its OpenMP runtime) loaded and every symbol this module needs was found. */
    public static boolean available() {
        return B != null;
    }

    /** Why oneDNN is unavailable, or, when it is, which library was loaded from where and its ISA. */
    public static String reason() {
        return REASON;
    }

    /** The oneDNN version string ("3.13.0"); throws when unavailable. */
    public static String version() {
        return bindings().version;
    }

    /**
     * True when the CPU runs bf16 matmul natively (avx512_bf16, AMX or avx2_vnni_2, by oneDNN's own
     * {@code dnnl_get_effective_cpu_isa}); elsewhere oneDNN may still create bf16 primitives but slowly, or not at all.
     */
    public static boolean bf16Native() {
        if (B == null) {
            return false;
        }
        return (B.isa & ISA_AVX512_CORE_BF16) == ISA_AVX512_CORE_BF16 || (B.isa & ISA_AVX2_VNNI_2) == ISA_AVX2_VNNI_2;
    }

    /**
     * Sets the OpenMP thread count for oneDNN calls made from the calling thread ({@code omp_set_num_threads}:
     * an OpenMP ICV of the calling thread's task, so each Java thread that calls oneDNN sets its own; the GEMM
     * classes here do that on a thread's first call). False when the OpenMP runtime exposes no such symbol.
     */
    public static boolean setThreadsForCallingThread(int threads) {
        if (threads < 1) {
            throw new Moe4jException("oneDNN threads = " + threads + ": must be >= 1");
        }
        Bindings b = bindings();
        if (b.ompSetNumThreads == null) {
            return false;
        }
        try {
            b.ompSetNumThreads.invokeExact(threads);
        } catch (Throwable t) {
            throw rethrow(t);
        }
        return true;
    }

    /**
     * {@code omp_get_max_threads()} on the calling thread: how many OpenMP threads a oneDNN call made from here
     * would use; -1 when the OpenMP runtime exposes no such symbol.
     */
    public static int maxThreadsForCallingThread() {
        Bindings b = bindings();
        if (b.ompGetMaxThreads == null) {
            return -1;
        }
        try {
            return (int) b.ompGetMaxThreads.invokeExact();
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** The bound entry points; throws NativeLibraryException with {@link #reason()} when unavailable. */
    static Bindings bindings() {
        if (B == null) {
            throw new NativeLibraryException("oneDNN is not available: " + REASON);
        }
        return B;
    }

    /** Throws a NativeLibraryException naming the call when a dnnl_status_t is not dnnl_success. */
    static void check(int status, String call) {
        if (status != SUCCESS) {
            throw new NativeLibraryException(call + " failed: " + statusName(status));
        }
    }

    static String statusName(int s) {
        return switch (s) {
            case 0 -> "dnnl_success";
            case 1 -> "dnnl_out_of_memory";
            case 2 -> "dnnl_invalid_arguments";
            case 3 -> "dnnl_unimplemented";
            case 4 -> "dnnl_last_impl_reached";
            case 5 -> "dnnl_runtime_error";
            case 6 -> "dnnl_not_required";
            default -> "dnnl status " + s;
        };
    }

    static String isaName(int isa) {
        return switch (isa) {
            case 0x1 -> "sse41";
            case 0x3 -> "avx";
            case 0x7 -> "avx2";
            case 0xf -> "avx2_vnni";
            case 0x1f -> "avx2_vnni_2";
            case 0x27 -> "avx512_core";
            case 0x67 -> "avx512_core_vnni";
            case 0xe7 -> "avx512_core_bf16";
            case 0x1ef -> "avx10_1_512 (avx512_core_fp16)";
            case 0xfef -> "avx10_1_512_amx";
            case 0x1fef -> "avx10_1_512_amx_fp16";
            case 0x201ff -> "avx10_2";
            case 0x22fff -> "avx10_2_amx_2";
            default -> "0x" + Integer.toHexString(isa);
        };
    }

    static RuntimeException rethrow(Throwable t) {
        if (t instanceof RuntimeException r) {
            throw r;
        }
        if (t instanceof Error e) {
            throw e;
        }
        throw new NativeLibraryException("native call failed: " + t, t);
    }

    /** Method handles for the oneDNN C API, looked up once. Signatures as in oneDNN 3.13's dnnl.h. */
    static final class Bindings {
        final String version;
        final int isa;
        // dnnl_status_t dnnl_sgemm(char transa, char transb, dnnl_dim_t M, N, K, float alpha, const float *A,
        //     dnnl_dim_t lda, const float *B, dnnl_dim_t ldb, float beta, float *C, dnnl_dim_t ldc)
        final MethodHandle sgemm;
        // dnnl_status_t dnnl_engine_create(dnnl_engine_t *engine, dnnl_engine_kind_t kind, size_t index)
        final MethodHandle engineCreate;
        final MethodHandle engineDestroy;
        // dnnl_status_t dnnl_stream_create(dnnl_stream_t *stream, dnnl_engine_t engine, unsigned flags)
        final MethodHandle streamCreate;
        final MethodHandle streamWait;
        final MethodHandle streamDestroy;
        // dnnl_status_t dnnl_memory_desc_create_with_strides(dnnl_memory_desc_t *md, int ndims,
        //     const dnnl_dims_t dims, dnnl_data_type_t data_type, const dnnl_dims_t strides)
        final MethodHandle memoryDescCreateWithStrides;
        final MethodHandle memoryDescDestroy;
        // size_t dnnl_memory_desc_get_size(const_dnnl_memory_desc_t md)
        final MethodHandle memoryDescGetSize;
        // dnnl_status_t dnnl_primitive_attr_create(dnnl_primitive_attr_t *attr)
        final MethodHandle attrCreate;
        final MethodHandle attrDestroy;
        // dnnl_status_t dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_t mode)
        final MethodHandle attrSetScratchpadMode;
        // dnnl_status_t dnnl_primitive_attr_set_scales_mask(attr, int arg, int mask)
        final MethodHandle attrSetScalesMask;
        // dnnl_status_t dnnl_primitive_attr_set_post_ops(attr, const_dnnl_post_ops_t post_ops)
        final MethodHandle attrSetPostOps;
        final MethodHandle postOpsCreate;
        final MethodHandle postOpsDestroy;
        // dnnl_status_t dnnl_post_ops_append_sum(post_ops, float scale, int32_t zero_point, dnnl_data_type_t dt)
        final MethodHandle postOpsAppendSum;
        // dnnl_status_t dnnl_matmul_primitive_desc_create(dnnl_primitive_desc_t *pd, dnnl_engine_t engine,
        //     src_desc, weights_desc, bias_desc, dst_desc, const_dnnl_primitive_attr_t attr)
        final MethodHandle matmulPrimitiveDescCreate;
        final MethodHandle primitiveDescDestroy;
        // const_dnnl_memory_desc_t dnnl_primitive_desc_query_md(pd, dnnl_query_t what, int index)
        final MethodHandle primitiveDescQueryMd;
        // dnnl_status_t dnnl_primitive_create(dnnl_primitive_t *primitive, const_dnnl_primitive_desc_t pd)
        final MethodHandle primitiveCreate;
        final MethodHandle primitiveDestroy;
        // dnnl_status_t dnnl_primitive_execute(primitive, dnnl_stream_t stream, int nargs, const dnnl_exec_arg_t *args)
        final MethodHandle primitiveExecute;
        // dnnl_status_t dnnl_memory_create(dnnl_memory_t *memory, const_dnnl_memory_desc_t md, dnnl_engine_t engine,
        //     void *handle)
        final MethodHandle memoryCreate;
        // dnnl_status_t dnnl_memory_set_data_handle(dnnl_memory_t memory, void *handle)
        final MethodHandle memorySetDataHandle;
        final MethodHandle memoryDestroy;
        // void omp_set_num_threads(int) and int omp_get_max_threads(void) from the OpenMP runtime; null when absent
        final MethodHandle ompSetNumThreads;
        final MethodHandle ompGetMaxThreads;

        @SuppressWarnings("restricted")
        Bindings(NativeLibraries.Loaded lib) {
            Linker linker = Linker.nativeLinker();
            SymbolLookup l = lib.lookup();
            sgemm = handle(linker, l, "dnnl_sgemm", FunctionDescriptor.of(JAVA_INT, JAVA_BYTE, JAVA_BYTE, JAVA_LONG,
                    JAVA_LONG, JAVA_LONG, JAVA_FLOAT, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_FLOAT,
                    JAVA_LONG, JAVA_LONG));
            engineCreate = handle(linker, l, "dnnl_engine_create", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT,
                    JAVA_LONG));
            engineDestroy = handle(linker, l, "dnnl_engine_destroy", FunctionDescriptor.of(JAVA_INT, ADDRESS));
            streamCreate = handle(linker, l, "dnnl_stream_create", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS,
                    JAVA_INT));
            streamWait = handle(linker, l, "dnnl_stream_wait", FunctionDescriptor.of(JAVA_INT, ADDRESS));
            streamDestroy = handle(linker, l, "dnnl_stream_destroy", FunctionDescriptor.of(JAVA_INT, ADDRESS));
            memoryDescCreateWithStrides = handle(linker, l, "dnnl_memory_desc_create_with_strides",
                    FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, ADDRESS, JAVA_INT, ADDRESS));
            memoryDescDestroy = handle(linker, l, "dnnl_memory_desc_destroy", FunctionDescriptor.of(JAVA_INT, ADDRESS));
            memoryDescGetSize = handle(linker, l, "dnnl_memory_desc_get_size", FunctionDescriptor.of(JAVA_LONG,
                    ADDRESS));
            attrCreate = handle(linker, l, "dnnl_primitive_attr_create", FunctionDescriptor.of(JAVA_INT, ADDRESS));
            attrDestroy = handle(linker, l, "dnnl_primitive_attr_destroy", FunctionDescriptor.of(JAVA_INT, ADDRESS));
            attrSetScratchpadMode = handle(linker, l, "dnnl_primitive_attr_set_scratchpad_mode",
                    FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT));
            attrSetScalesMask = handle(linker, l, "dnnl_primitive_attr_set_scales_mask",
                    FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT));
            attrSetPostOps = handle(linker, l, "dnnl_primitive_attr_set_post_ops", FunctionDescriptor.of(JAVA_INT,
                    ADDRESS, ADDRESS));
            postOpsCreate = handle(linker, l, "dnnl_post_ops_create", FunctionDescriptor.of(JAVA_INT, ADDRESS));
            postOpsDestroy = handle(linker, l, "dnnl_post_ops_destroy", FunctionDescriptor.of(JAVA_INT, ADDRESS));
            postOpsAppendSum = handle(linker, l, "dnnl_post_ops_append_sum", FunctionDescriptor.of(JAVA_INT, ADDRESS,
                    JAVA_FLOAT, JAVA_INT, JAVA_INT));
            matmulPrimitiveDescCreate = handle(linker, l, "dnnl_matmul_primitive_desc_create",
                    FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS));
            primitiveDescDestroy = handle(linker, l, "dnnl_primitive_desc_destroy", FunctionDescriptor.of(JAVA_INT,
                    ADDRESS));
            primitiveDescQueryMd = handle(linker, l, "dnnl_primitive_desc_query_md", FunctionDescriptor.of(ADDRESS,
                    ADDRESS, JAVA_INT, JAVA_INT));
            primitiveCreate = handle(linker, l, "dnnl_primitive_create", FunctionDescriptor.of(JAVA_INT, ADDRESS,
                    ADDRESS));
            primitiveDestroy = handle(linker, l, "dnnl_primitive_destroy", FunctionDescriptor.of(JAVA_INT, ADDRESS));
            primitiveExecute = handle(linker, l, "dnnl_primitive_execute", FunctionDescriptor.of(JAVA_INT, ADDRESS,
                    ADDRESS, JAVA_INT, ADDRESS));
            memoryCreate = handle(linker, l, "dnnl_memory_create", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS,
                    ADDRESS, ADDRESS));
            memorySetDataHandle = handle(linker, l, "dnnl_memory_set_data_handle", FunctionDescriptor.of(JAVA_INT,
                    ADDRESS, JAVA_LONG));
            memoryDestroy = handle(linker, l, "dnnl_memory_destroy", FunctionDescriptor.of(JAVA_INT, ADDRESS));

            MethodHandle isaHandle = handle(linker, l, "dnnl_get_effective_cpu_isa", FunctionDescriptor.of(JAVA_INT));
            // const dnnl_version_t *dnnl_version(void): struct { int major, minor, patch; const char *hash; ... }
            MethodHandle versionHandle = handle(linker, l, "dnnl_version", FunctionDescriptor.of(ADDRESS));
            MemorySegment omp = l.find("omp_set_num_threads").orElseGet(() -> systemOmp("omp_set_num_threads"));
            ompSetNumThreads = omp == null ? null
                    : linker.downcallHandle(omp, FunctionDescriptor.ofVoid(JAVA_INT));
            MemorySegment ompMax = l.find("omp_get_max_threads").orElseGet(() -> systemOmp("omp_get_max_threads"));
            ompGetMaxThreads = ompMax == null ? null : linker.downcallHandle(ompMax, FunctionDescriptor.of(JAVA_INT));
            try {
                isa = (int) isaHandle.invokeExact();
                MemorySegment v = ((MemorySegment) versionHandle.invokeExact()).reinterpret(12);
                version = v.get(JAVA_INT, 0) + "." + v.get(JAVA_INT, 4) + "." + v.get(JAVA_INT, 8);
            } catch (Throwable t) {
                throw rethrow(t);
            }
            if (!version.startsWith("3.")) {
                throw new NativeLibraryException(lib.origin() + ": oneDNN " + version + ", this binding needs 3.x");
            }
        }

        /** A system oneDNN links its OpenMP runtime itself; dlopen by soname finds the copy already loaded. */
        @SuppressWarnings("restricted")
        private static MemorySegment systemOmp(String symbol) {
            try {
                return SymbolLookup.libraryLookup("libgomp.so.1", Arena.global()).find(symbol).orElse(null);
            } catch (IllegalArgumentException e) {
                return null;
            }
        }

        @SuppressWarnings("restricted")
        private static MethodHandle handle(Linker linker, SymbolLookup l, String name, FunctionDescriptor fd) {
            MemorySegment sym = l.find(name).orElseThrow(() -> new NativeLibraryException(
                    "symbol " + name + " not found in the loaded oneDNN (expected oneDNN 3.x)"));
            return linker.downcallHandle(sym, fd);
        }
    }
}
