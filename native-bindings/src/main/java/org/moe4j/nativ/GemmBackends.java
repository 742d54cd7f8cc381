package org.moe4j.nativ;

import java.util.Locale;
import org.moe4j.simd.Gemm;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.WorkerPool;

/**
 * Chooses the {@link Gemm} the engine runs on, once, at start-up: {@code auto | java | onednn | onednn_matmul |
 * cuda}, from the engine's config or {@code -Dmoe4j.gemm} / {@code $MOE4J_GEMM} (default {@code auto}).
 *
 * <ul>
 *   <li>{@code java}: the Vector API kernel on the engine's worker pool.</li>
 *   <li>{@code onednn}: oneDNN's sgemm with as many OpenMP threads as the pool has; if oneDNN cannot be loaded,
 *   one WARNING line and the Java kernel.</li>
 *   <li>{@code onednn_matmul}: oneDNN's matmul primitive ({@link OneDnnMatmul}), one cached primitive per shape.
 *   Faster than dnnl_sgemm on the small-R expert shapes in BackendGemmBench, but each new shape costs a primitive
 *   creation (~2 ms measured) and calls on it are serialised; for experiments until the engine groups its
 *   GEMMs by shape. Falls back like {@code onednn}.</li>
 *   <li>{@code cuda}: cuBLAS through {@link CudaGemm} (host operands copied per call); without CUDA, one WARNING
 *   line and what {@code auto} picks.</li>
 *   <li>{@code auto}: oneDNN when it loads, else Java. Not CUDA: through this host-memory interface every call
 *   copies its operands over PCIe, which loses to the CPU for MoE expert shapes; device-resident use is opted
 *   into explicitly.</li>
 * </ul>
 *
 * Every choice is logged at INFO with the reason, so a run's log says which backend produced its numbers.
 */
public final class GemmBackends {
    public static final String PROPERTY = "moe4j.gemm";
    public static final String ENV = "MOE4J_GEMM";

    private static final System.Logger LOG = System.getLogger("org.moe4j.nativ");

    private GemmBackends() {
    }

    /** The backend and why it was chosen. */
    public record Choice(Gemm gemm, String requested, String reason) {
    }

    /** The backend named by {@code -Dmoe4j.gemm}, else {@code $MOE4J_GEMM}, else auto. */
    public static Choice fromEnvironment(WorkerPool pool) {
        String r = System.getProperty(PROPERTY);
        if (r == null || r.isBlank()) {
            r = System.getenv(ENV);
        }
        return select(r == null || r.isBlank() ? "auto" : r, pool);
    }

    /**
     * Builds the requested backend (see the class comment for fallbacks); throws IllegalArgumentException for a
     * name that is none of auto, java, onednn, cuda.
     */
    public static Choice select(String requested, WorkerPool pool) {
        if (pool == null) {
            throw new IllegalArgumentException("GemmBackends: pool must not be null");
        }
        String req = requested == null ? "auto" : requested.trim().toLowerCase(Locale.ROOT);
        Choice c = switch (req) {
            case "java" -> new Choice(new JavaGemm(pool), req, "requested");
            case "onednn", "onednn_matmul" -> oneDnnOrJava(req, pool, "requested");
            case "auto" -> oneDnnOrJava(req, pool, "auto");
            case "cuda" -> {
                if (Cuda.available()) {
                    yield new Choice(new CudaGemm(), req, "requested; " + Cuda.reason());
                }
                LOG.log(System.Logger.Level.WARNING, "GEMM backend 'cuda' requested but unavailable ("
                        + Cuda.reason() + "); choosing as for auto");
                Choice a = oneDnnOrJava(req, pool, "cuda unavailable");
                yield a;
            }
            default -> throw new IllegalArgumentException(PROPERTY + "=" + requested + ": expected one of auto, java, "
                    + "onednn, onednn_matmul, cuda");
        };
        LOG.log(System.Logger.Level.INFO, "GEMM backend: " + c.gemm().name() + " (" + c.reason() + ")");
        return c;
    }

    private static Choice oneDnnOrJava(String req, WorkerPool pool, String why) {
        JavaGemm java = new JavaGemm(pool);
        if (OneDnn.available()) {
            Gemm g = req.equals("onednn_matmul") ? new OneDnnMatmul(pool.threads())
                    : new OneDnnGemm(pool.threads(), java);
            return new Choice(g, req, why + "; " + OneDnn.reason() + ", " + pool.threads() + " OpenMP threads");
        }
        if (req.startsWith("onednn")) {
            LOG.log(System.Logger.Level.WARNING, "GEMM backend '" + req + "' requested but unavailable ("
                    + OneDnn.reason() + "); using java");
        }
        return new Choice(java, req, why + "; oneDNN unavailable: " + OneDnn.reason());
    }
}
