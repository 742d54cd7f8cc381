package org.moe4j.nativ;

import java.util.Locale;
import org.moe4j.Moe4jException;
import org.moe4j.simd.Bf16Gemm;
import org.moe4j.simd.Gemm;
import org.moe4j.simd.JavaBf16Gemm;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.WorkerPool;

/**
 * Chooses the {@link Gemm} the engine runs on, once, at start-up: {@code auto | java | onednn | onednn_matmul |
 * cuda}, from the engine's config or {@code -Dmoe4j.gemm} / {@code $MOE4J_GEMM} (default {@code auto}).
 *
 * <ul>
 *   <li>{@code java}: the Vector API kernel on the engine's worker pool.</li>
 *   <li>{@code onednn}: oneDNN's sgemm with as many OpenMP threads as the pool has; if oneDNN cannot be loaded,
 *   the Java kernel, and the choice is logged as WARNING instead of INFO.</li>
 *   <li>{@code onednn_matmul}: oneDNN's matmul primitive ({@link OneDnnMatmul}), one cached primitive per shape.
 *   Faster than dnnl_sgemm on the small-R expert shapes in BackendGemmBench, but each new shape costs a primitive
 *   creation (~2 ms measured) and calls on it are serialised; for experiments until the engine groups its
 *   GEMMs by shape. Falls back like {@code onednn}.</li>
 *   <li>{@code cuda}: cuBLAS through {@link CudaGemm} (host operands copied per call); without CUDA, what
 *   {@code auto} picks, logged as WARNING.</li>
 *   <li>{@code auto}: oneDNN when it loads, else Java. Not CUDA: through this host-memory interface every call
 *   copies its operands over PCIe, which loses to the CPU for MoE expert shapes; device-resident use is opted
 *   into explicitly.</li>
 * </ul>
 *
 * Every choice is logged as one line with the reason, so a run's log says which backend produced its numbers: INFO
 * when it is what was asked for, WARNING when a native library could not be had (the line says why).
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
        if (r != null && !r.isBlank()) {
            return select(r, "-D" + PROPERTY, pool);
        }
        r = System.getenv(ENV);
        if (r != null && !r.isBlank()) {
            return select(r, "$" + ENV, pool);
        }
        return select("auto", "the default", pool);
    }

    /**
     * Builds the requested backend (see the class comment for fallbacks); throws Moe4jException for a name that is
     * none of auto, java, onednn, onednn_matmul, cuda. The name is taken to come from the CLI's {@code --gemm}.
     */
    public static Choice select(String requested, WorkerPool pool) {
        return select(requested, "--gemm", pool);
    }

    /**
     * As {@link #select(String, WorkerPool)}; {@code origin} names where the request came from ({@code --gemm},
     * {@code -Dmoe4j.gemm}, ...) for the error message.
     *
     * <p>Logs exactly one line per call: INFO with the backend and why when it is what was asked for, WARNING when
     * it falls back (oneDNN or CUDA requested or, for auto, oneDNN expected but not loadable). The line holds the
     * whole reason, so nothing else in this module logs the same failure again.
     */
    public static Choice select(String requested, String origin, WorkerPool pool) {
        if (pool == null) {
            throw new Moe4jException("GemmBackends.select: the worker pool is null (pass the engine's WorkerPool)");
        }
        String req = requested == null ? "auto" : requested.trim().toLowerCase(Locale.ROOT);
        boolean fellBack = false;
        Choice c;
        switch (req) {
            case "java" -> c = new Choice(new JavaGemm(pool), req, "requested");
            case "onednn", "onednn_matmul", "auto" -> {
                c = oneDnnOrJava(req, pool, req.equals("auto") ? "auto" : "requested");
                fellBack = !OneDnn.available();
            }
            case "cuda" -> {
                if (Cuda.available()) {
                    c = new Choice(new CudaGemm(), req, "requested; " + Cuda.reason());
                } else {
                    c = oneDnnOrJava(req, pool, "cuda requested but unavailable: " + Cuda.reason());
                    fellBack = true;
                }
            }
            default -> throw new Moe4jException("GEMM backend '" + requested + "' (" + origin + "): expected one of "
                    + "auto, java, onednn, onednn_matmul, cuda");
        }
        String line = oneLine("GEMM backend: " + c.gemm().name() + " (" + c.reason() + ")");
        LOG.log(fellBack ? System.Logger.Level.WARNING : System.Logger.Level.INFO, line);
        return c;
    }

    private static Choice oneDnnOrJava(String req, WorkerPool pool, String why) {
        if (OneDnn.available()) {
            Gemm g = req.equals("onednn_matmul") ? new OneDnnMatmul(pool.threads())
                    : new OneDnnGemm(pool.threads(), new JavaGemm(pool));
            return new Choice(g, req, why + "; " + OneDnn.reason() + ", " + pool.threads() + " OpenMP threads");
        }
        return new Choice(new JavaGemm(pool), req, why + "; oneDNN unavailable, so the Java kernel: " + OneDnn.reason());
    }

    /** The bf16 GEMM for {@code --precision bf16} and why it was chosen. */
    public record Bf16Choice(Bf16Gemm gemm, String reason) {
    }

    /**
     * The {@link Bf16Gemm} to pair with {@code f32}, the float32 backend already chosen: oneDNN's bf16 matmul
     * ({@link OneDnnBf16Gemm}) when oneDNN loads, the CPU has native bf16 (avx512_bf16 or AMX) and {@code f32} is not
     * the Java kernel (asking for {@code --gemm java} keeps every product in Java); otherwise {@link JavaBf16Gemm}
     * over {@code f32} (correct, not faster than float32). Logs one line, WARNING when oneDNN was expected but could
     * not be used.
     */
    public static Bf16Choice bf16(Gemm f32, WorkerPool pool) {
        if (f32 == null || pool == null)
            throw new Moe4jException("GemmBackends.bf16: the float32 GEMM and the worker pool must not be null");
        Bf16Choice c;
        boolean fellBack = false;
        if (f32 instanceof JavaGemm) {
            c = new Bf16Choice(new JavaBf16Gemm(f32, pool), "the float32 backend is java: bf16 operands widened to "
                    + "float32 for it");
        } else if (OneDnn.available() && OneDnn.bf16Native()) {
            c = new Bf16Choice(new OneDnnBf16Gemm(pool.threads()), "oneDNN bf16 matmul; " + OneDnn.reason());
        } else {
            fellBack = true;
            c = new Bf16Choice(new JavaBf16Gemm(f32, pool), (OneDnn.available()
                    ? "this CPU has no native bf16 for oneDNN" : "oneDNN unavailable: " + OneDnn.reason())
                    + ", so bf16 operands are widened to float32 for " + f32.name());
        }
        LOG.log(fellBack ? System.Logger.Level.WARNING : System.Logger.Level.INFO,
                oneLine("BF16 GEMM: " + c.gemm().name() + " (" + c.reason() + ")"));
        return c;
    }

    /** A log line is one line: native error texts (dlerror, nested exceptions) may carry line breaks. */
    static String oneLine(String s) {
        return s.replaceAll("\\s*\\R\\s*", " ");
    }
}
