package org.moe4j.engine.model;

/**
 * Wall time of a training step per phase, for profiling (StepBench {@code --phases}). Off unless the JVM runs with
 * {@code -Dmoe4j.phaseTimes=true}: {@link #ON} is a static final, so when it is false C2 drops every call and the
 * step is unchanged. When on, a call is one {@link System#nanoTime()}, one read of the stepping thread's allocated-bytes
 * counter and a few array writes; nothing is allocated. Besides wall time it charges each phase the heap bytes the
 * stepping thread allocated in it (a step's stray allocation shows up in the phase that made it).
 *
 * <p>Phases are entered from the stepping thread only (the pool's workers run inside the phase their caller is
 * in), so the state is plain static fields: the time between one {@link #enter} and the next is charged to the
 * first one's phase. Not for concurrent transformers in one JVM.
 */
public final class PhaseTimer {
    private PhaseTimer() {
    }

    public static final boolean ON = Boolean.getBoolean("moe4j.phaseTimes");

    /** Forward and backward phases of a step, in the order a step runs them. */
    public enum Phase {
        EMBED("embedding"),
        ATTENTION("attention (norm, QKV, RoPE, attention, Wo)"),
        ROUTER_GEMM("MoE norm + router logits"),
        ROUTER("router pipeline (softmax, top-k, sort, lb/z stats)"),
        DISPATCH("dispatch (gather, combine)"),
        EXPERTS("expert GEMMs + SwiGLU"),
        ERC("ERC"),
        HEAD("final norm + LM head"),
        CE("cross-entropy"),
        CE_BWD("cross-entropy backward"),
        HEAD_BWD("LM head + final norm backward"),
        DISPATCH_BWD("dispatch backward (combine, scatter-add)"),
        EXPERTS_BWD("expert GEMMs + SwiGLU backward"),
        ROUTER_BWD("router backward (gates, lb, z, router GEMMs, norm)"),
        ERC_BWD("ERC backward"),
        ATTENTION_BWD("attention backward"),
        EMBED_BWD("embedding backward"),
        OPTIMIZER("optimizer (zero grads, AdamW)");

        public final String label;

        Phase(String label) {
            this.label = label;
        }
    }

    private static final Phase[] PHASES = Phase.values();
    private static final long[] NANOS = new long[PHASES.length], BYTES = new long[PHASES.length];
    private static final com.sun.management.ThreadMXBean MX =
            (com.sun.management.ThreadMXBean) java.lang.management.ManagementFactory.getThreadMXBean();
    private static int current = -1;
    private static long since, bytesSince;

    /** Ends the running phase (if any) and starts {@code p}. */
    public static void enter(Phase p) {
        if (!ON) return;
        long t = System.nanoTime(), b = MX.getCurrentThreadAllocatedBytes();
        if (current >= 0) {
            NANOS[current] += t - since;
            BYTES[current] += b - bytesSince;
        }
        current = p.ordinal();
        since = t;
        bytesSince = b;
    }

    /** Ends the running phase. */
    public static void stop() {
        if (!ON) return;
        long t = System.nanoTime(), b = MX.getCurrentThreadAllocatedBytes();
        if (current >= 0) {
            NANOS[current] += t - since;
            BYTES[current] += b - bytesSince;
        }
        current = -1;
    }

    /** Heap bytes the stepping thread allocated in {@code p} since the last {@link #reset}. */
    public static long bytes(Phase p) {
        return BYTES[p.ordinal()];
    }

    /** Nanoseconds charged to {@code p} since the last {@link #reset}. */
    public static long nanos(Phase p) {
        return NANOS[p.ordinal()];
    }

    public static void reset() {
        java.util.Arrays.fill(NANOS, 0L);
        java.util.Arrays.fill(BYTES, 0L);
        current = -1;
    }
}
