package org.moe4j.engine.config;

import java.lang.management.ManagementFactory;
import java.util.Locale;
import org.moe4j.Moe4jException;

/**
 * What a model, a training run or a GEMM check will allocate, computed from its sizes before anything is allocated,
 * and the check that refuses a size this machine cannot hold. Sizes come from files and options a user (or a
 * hostile file) chose, so every product is taken in double: no overflow, and a size of 2^31 - 1 gives an estimate
 * of the right magnitude rather than a wrapped one.
 *
 * <p>The estimates are lower bounds of the big buffers (parameters, gradients, AdamW moments, the transformer's
 * per-token activations, as MoeTransformer allocates them); small per-layer scratch is left out. The limit is the
 * machine's physical memory (container-aware, as the JDK reports it), overridable with
 * {@code -Dmoe4j.memoryLimit=BYTES} (used by tests).
 */
public final class MemoryEstimate {
    private MemoryEstimate() {
    }

    /** Parameters of a model of {@code c} (ParamLayout's tensors, counted without building it). */
    public static double parameters(ModelConfig c) {
        double d = c.d(), qw = (double) c.heads() * c.headSize(), kw = (double) c.kvHeads() * c.headSize();
        double perLayer = d + qw * d + 2 * kw * d + d * qw + (c.qkNorm() ? qw + kw : 0) + d;
        return (c.tied() ? 1 : 2) * (double) c.vocab() * d + c.layers() * perLayer + expertsSum(c) * (d + 3.0 * c.expertHidden() * d) + d;
    }

    /** Tensors of a model of {@code c}, as ParamLayout lists them. */
    public static double tensors(ModelConfig c) {
        return (c.tied() ? 2 : 3) + (double) c.layers() * (7 + (c.qkNorm() ? 2 : 0)) + 3.0 * expertsSum(c);
    }

    /** Σ_l E_l, the experts of every layer (E · layers for a uniform model). */
    private static double expertsSum(ModelConfig c) {
        double n = 0;
        for (int l = 0; l < c.layers(); l++) n += c.experts(l);
        return n;
    }

    /** Bytes of a model's parameters and gradients (float32 each), as MoeModel allocates them. */
    public static double modelBytes(ModelConfig c) {
        return parameters(c) * 2 * Float.BYTES;
    }

    /**
     * Bytes of a training run: the model, the AdamW moments, and the transformer's activations for
     * {@code tokens} tokens per micro-batch (ParamLayout's shapes times MoeTransformer's buffers per token).
     */
    public static double trainingBytes(ModelConfig c, double tokens) {
        return trainingBytes(c, tokens, parameters(c));
    }

    /**
     * As {@link #trainingBytes(ModelConfig, double)} for a process that holds {@code held} of the model's parameters
     * (an expert-parallel rank: the dense tensors and its own experts) with their gradients and moments.
     */
    public static double trainingBytes(ModelConfig c, double tokens, double held) {
        double d = c.d(), qw = (double) c.heads() * c.headSize(), kw = (double) c.kvHeads() * c.headSize();
        double e = c.experts(), h = c.expertHidden(), kTot = c.maxRoutedK() + (double) c.sharedExperts();
        // per token and layer: x, xn1, q, k, v, att, h, xn2 (+ qk-norm copies), router logits and probabilities,
        // and kTot expert slots of input, gate+up, activation and output
        double perLayer = 4 * d + 2 * qw + 2 * kw + c.heads() + (c.qkNorm() ? qw + kw : 0) + 3 * e
                + kTot * (2 * d + 3 * h);
        // per token once: logits over the vocabulary, final norm, the gradient buffers
        double once = c.vocab() + 3 * d + 2 * qw + 2 * kw + 2 * e + kTot * (d + h) + 8;
        double rope = 2.0 * c.maxSeq() * c.headSize();
        return held * 4 * Float.BYTES
                + (tokens * (c.layers() * perLayer + once) + rope) * Float.BYTES;
    }

    /**
     * Bytes of Java heap a training run's routing needs: per layer, the router's logits and its routing's
     * probabilities, tokens x experts floats each, and the router-logit gradients once.
     */
    public static double heapBytes(ModelConfig c, double tokens) {
        return (2.0 * c.layers() + 1) * tokens * c.experts() * Float.BYTES + tokens * 8 * Integer.BYTES;
    }

    /** Fails unless {@code bytes} of Java heap fit in the heap limit (-Xmx); {@code what} as in {@link #require}. */
    public static void requireHeap(String what, double bytes) {
        double limit = Runtime.getRuntime().maxMemory();
        if (!(bytes <= limit)) {
            throw new Moe4jException(String.format(Locale.ROOT, "%s needs about %s of Java heap, more than the %s "
                    + "this JVM may use (-Xmx); lower it, or raise -Xmx", what, human(bytes), human(limit)));
        }
    }

    /** The memory a run may use: {@code -Dmoe4j.memoryLimit}, else the physical memory the JDK sees. */
    public static double limit() {
        String p = System.getProperty("moe4j.memoryLimit");
        if (p != null) {
            try {
                return Double.parseDouble(p);
            } catch (NumberFormatException e) {
                throw new Moe4jException("-Dmoe4j.memoryLimit=" + p + ": expected a number of bytes");
            }
        }
        if (ManagementFactory.getOperatingSystemMXBean() instanceof com.sun.management.OperatingSystemMXBean os) {
            long total = os.getTotalMemorySize();
            if (total > 0) return total;
        }
        return Runtime.getRuntime().maxMemory();
    }

    /**
     * Fails unless {@code bytes} fits in {@link #limit()}; {@code what} names the sizes that led to it (the field
     * or option and its value), so the user knows which one to lower.
     */
    public static void require(String what, double bytes) {
        double limit = limit();
        if (!(bytes <= limit)) {
            throw new Moe4jException(String.format(Locale.ROOT, "%s needs about %s, more than the %s of memory this "
                    + "machine has; lower it", what, human(bytes), human(limit)));
        }
    }

    /** Checks a model of {@code c} (parameters and gradients) before it is allocated. */
    public static void requireModel(ModelConfig c, String where) {
        requireModel(c, where, parameters(c), true);
    }

    /** Checks {@code held} parameters of a model of {@code c} (a rank's share), with gradients or without. */
    public static void requireModel(ModelConfig c, String where, double held, boolean gradients) {
        require(where + ": a model of vocab " + c.vocab() + ", d " + c.d() + ", " + c.layers() + " layers, "
                + c.experts() + " experts of hidden " + c.expertHidden() + String.format(Locale.ROOT,
                " (%.3g parameters%s)", parameters(c), held < parameters(c) ? String.format(Locale.ROOT,
                        ", %.3g of them on this rank", held) : ""), held * (gradients ? 2 : 1) * Float.BYTES);
    }

    /** Bytes as a person reads them: 1.5 GiB, 12.0 TiB. */
    public static String human(double bytes) {
        String[] units = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
        int u = 0;
        double v = bytes;
        while (v >= 1024 && u < units.length - 1) {
            v /= 1024;
            u++;
        }
        return u == 0 ? String.format(Locale.ROOT, "%.0f bytes", v) : String.format(Locale.ROOT, "%.1f %s", v, units[u]);
    }
}
