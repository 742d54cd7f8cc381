package org.moe4j.engine.model;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.SplittableRandom;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.simd.DType;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.WorkerPool;

/**
 * The parameters of one MoE language model and their gradients, each one flat off-heap float32 buffer in
 * {@link ParamLayout} order, owned by the model's arena. {@link #close()} frees both. An expert-parallel rank's model
 * is built on its rank-local layout ({@link ParamLayout#ParamLayout(ModelConfig, int, int)}): the same tensors less
 * the other ranks' routed experts.
 */
public final class MoeModel implements AutoCloseable {
    private final ModelConfig config;
    private final ParamLayout layout;
    private final Arena arena;
    private final MemorySegment params;
    private final MemorySegment grads;

    public MoeModel(ModelConfig config) {
        this(config, true);
    }

    /** A model with (training) or without (inference: {@link #grads()} is null) a gradient buffer. */
    public MoeModel(ModelConfig config, boolean gradients) {
        this(null, config, gradients);
    }

    /** A model holding the tensors of {@code layout} (an expert-parallel rank's, say), with or without gradients. */
    public MoeModel(ParamLayout layout, boolean gradients) {
        this(layout, layout.config(), gradients);
    }

    private MoeModel(ParamLayout layout, ModelConfig config, boolean gradients) {
        // before the buffers (and, without a layout, before building one)
        if (layout == null) org.moe4j.engine.config.MemoryEstimate.requireModel(config, "MoeModel");
        else org.moe4j.engine.config.MemoryEstimate.requireModel(config, "MoeModel", layout.total(), gradients);
        this.config = config;
        this.layout = layout != null ? layout : new ParamLayout(config);
        this.arena = Arena.ofShared();
        long bytes = this.layout.total() * Float.BYTES;
        this.params = arena.allocate(bytes, Tensor.ALIGNMENT);
        this.grads = gradients ? arena.allocate(bytes, Tensor.ALIGNMENT) : null;
    }

    public ModelConfig config() {
        return config;
    }

    public ParamLayout layout() {
        return layout;
    }

    /** The flat parameter buffer [layout().total()]. */
    public MemorySegment params() {
        return params;
    }

    /**
     * The flat gradient buffer, same layout; null for a model loaded for inference. Whoever takes it may write it:
     * the mark of {@link #markGradsZero()} is dropped.
     */
    public MemorySegment grads() {
        gradsZero = false;
        return grads;
    }

    /** Set by {@link #markGradsZero()}; dropped when the gradients may have been written, or by one zeroGrads. */
    private boolean gradsZero;

    /**
     * Says every gradient is zero now (the optimizer zeroed them as it read them; {@code
     * AdamWOptimizer.zeroGradients}): the next {@link #zeroGrads} has nothing to do. A backward pass ({@link
     * #gradsWritten()}), taking the buffer ({@link #grads()}, {@link #grad}) or that one zeroGrads drops the mark.
     * Whoever writes the gradients through a buffer taken before the mark must call {@link #gradsWritten()} first
     * (the transformer's backward does).
     */
    public void markGradsZero() {
        gradsZero = true;
    }

    /** Says the gradients are being written (a backward pass): the next {@link #zeroGrads} zeroes them. */
    public void gradsWritten() {
        gradsZero = false;
    }

    /** Whether the gradients are known to be zero (tests). */
    public boolean gradsKnownZero() {
        return gradsZero;
    }

    /** A view of one parameter. */
    public Tensor param(String name) {
        return view(params, layout.entry(name));
    }

    /** A view of one parameter's gradient. */
    public Tensor grad(String name) {
        gradsZero = false;
        return view(grads, layout.entry(name));
    }

    private static Tensor view(MemorySegment seg, ParamLayout.Entry e) {
        return Tensor.of(seg.asSlice(e.offset() * Float.BYTES, e.numel() * Float.BYTES), DType.F32, e.shape());
    }

    public void zeroGrads() {
        if (skipZeroing() || grads == null) return;
        grads.fill((byte) 0);
    }

    /** Whether the optimizer's mark says there is nothing to zero; the mark serves one zeroGrads call. */
    private boolean skipZeroing() {
        boolean skip = gradsZero;
        gradsZero = false;
        return skip;
    }

    /** Pieces of the gradient buffer (1 MiB each) for {@link #zeroGrads(WorkerPool)}, made once. */
    private MemorySegment[] gradPieces;
    private final WorkerPool.RangeTask zeroTask = (a, b, w) -> {
        for (int i = a; i < b; i++) gradPieces[i].fill((byte) 0);
    };

    /**
     * As {@link #zeroGrads()} over the pool's threads: one thread's memset writes ~7 GB/s on the development VM, a
     * training step's gradient buffer is 4 bytes a parameter (452 MB for the bench config: 67 ms alone,
     * 37-41 ms on two threads). Allocates nothing after the first call.
     */
    public void zeroGrads(WorkerPool pool) {
        if (skipZeroing() || grads == null) return;
        if (gradPieces == null) {
            long piece = 1 << 20;
            MemorySegment[] p = new MemorySegment[(int) ((grads.byteSize() + piece - 1) / piece)];
            for (int i = 0; i < p.length; i++)
                p[i] = grads.asSlice(i * piece, Math.min(piece, grads.byteSize() - i * piece));
            gradPieces = p;
        }
        pool.parallelFor(gradPieces.length, zeroTask);
    }

    /**
     * GPT-2 style initialisation: norm weights 1, matrices N(0, 0.02²), the projections that write into the residual
     * stream (o_proj, down_proj) scaled by 1/sqrt(2·layers). Deterministic in the seed; a rank-local model gets the
     * whole model's values of the tensors it holds (the draws of the others are made and dropped, in order).
     */
    public MoeModel initRandom(long seed) {
        SplittableRandom rnd = new SplittableRandom(seed);
        double resid = 0.02 / Math.sqrt(2.0 * config.layers());
        for (ParamLayout.Entry e : layout.whole().entries()) {
            String n = e.name();
            boolean norm = n.endsWith("norm.weight") || n.endsWith("layernorm.weight");
            double std = n.contains("o_proj") || n.contains("down_proj") ? resid : 0.02;
            long at = layout.has(n) ? layout.offset(n) : -1;
            for (long i = 0; i < e.numel(); i++) {
                float v = norm ? 1f : (float) (gaussian(rnd) * std);
                if (at >= 0) params.setAtIndex(Tensor.FLOAT, at + i, v);
            }
        }
        return this;
    }

    private static double gaussian(SplittableRandom r) {
        // Box-Muller; one value per call is enough for initialisation
        double u1 = 1.0 - r.nextDouble(), u2 = r.nextDouble();
        return Math.sqrt(-2.0 * StrictMath.log(u1)) * StrictMath.cos(2 * Math.PI * u2);
    }

    /** Copies {@code values} into parameter {@code name}; the length must match its shape. */
    public void setParam(String name, float[] values) {
        ParamLayout.Entry e = layout.entry(name);
        if (values.length != e.numel())
            throw new Moe4jException("parameter '" + name + "' has " + e.numel() + " values " + e
                    + ", got " + values.length);
        MemorySegment.copy(values, 0, params, Tensor.FLOAT, e.offset() * Float.BYTES, values.length);
    }

    public float[] paramValues(String name) {
        return param(name).toFloatArray();
    }

    public float[] gradValues(String name) {
        return grad(name).toFloatArray();
    }

    @Override
    public void close() {
        arena.close();
    }
}
