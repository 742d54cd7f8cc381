package org.moe4j.engine.model;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.HashMap;
import java.util.Map;
import org.moe4j.Moe4jException;
import org.moe4j.simd.DType;
import org.moe4j.simd.Embedding;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.WeightGemm;

/**
 * Where a forward pass reads a model's weights. Two stores: {@code vectors} (F32) holds the norm weights and the
 * routers, which stay F32 so that routing decisions are taken on F32 logits; {@code matrices} holds the
 * projections, experts, embedding and LM head in F32 or BF16 at their {@link ParamLayout} offsets. For training and
 * F32 inference both stores are the model's one flat parameter buffer (no copy); for BF16 inference the matrices
 * are a BF16 copy and the vectors a compact F32 copy.
 */
public final class ModelWeights implements AutoCloseable {
    private final ParamLayout layout;
    private final MemorySegment vectors, matrices;
    private final boolean bf16;
    private final Map<String, Long> vectorOffsets;
    private final Arena arena;

    private ModelWeights(ParamLayout layout, MemorySegment vectors, MemorySegment matrices, boolean bf16,
                         Map<String, Long> vectorOffsets, Arena arena) {
        this.layout = layout;
        this.vectors = vectors;
        this.matrices = matrices;
        this.bf16 = bf16;
        this.vectorOffsets = vectorOffsets;
        this.arena = arena;
    }

    /** The model's own F32 parameters, in place. */
    public static ModelWeights f32(MoeModel model) {
        return new ModelWeights(model.layout(), model.params(), model.params(), false, null, null);
    }

    /** F32 weights read in place from a flat buffer in {@code layout} order (a mapped file, say). */
    public static ModelWeights f32(ParamLayout layout, MemorySegment params) {
        if (params.byteSize() < layout.total() * Float.BYTES)
            throw new Moe4jException("weights: the parameter buffer holds " + params.byteSize() + " bytes, the model needs "
                    + layout.total() * Float.BYTES);
        return new ModelWeights(layout, params, params, false, null, null);
    }

    /** BF16 matrices (round to nearest even) and F32 norms and routers, converted from F32 parameters. */
    public static ModelWeights bf16(ParamLayout layout, MemorySegment params) {
        f32(layout, params); // size check
        Arena arena = Arena.ofShared();
        try {
            Map<String, Long> offs = vectorOffsets(layout);
            MemorySegment vec = arena.allocate(Math.max(1, vectorCount(layout)) * Float.BYTES, Tensor.ALIGNMENT);
            MemorySegment mat = arena.allocate(layout.total() * 2, Tensor.ALIGNMENT);
            for (ParamLayout.Entry e : layout.entries()) {
                if (keptF32(e)) {
                    MemorySegment.copy(params, e.offset() * Float.BYTES, vec, offs.get(e.name()) * Float.BYTES,
                            e.numel() * Float.BYTES);
                } else {
                    WeightGemm.toBf16(params, e.offset(), mat, e.offset(), e.numel());
                }
            }
            return new ModelWeights(layout, vec, mat, true, offs, arena);
        } catch (RuntimeException | Error ex) {
            arena.close();
            throw ex;
        }
    }

    /**
     * Weights from a flat buffer in {@code layout} order stored as {@code stored} (F32 or BF16), used in place where
     * the precision matches ({@code wantBf16}); otherwise converted (BF16 -> F32 upcast, F32 -> BF16 rounded). The
     * flat buffer must outlive the weights (a mapped file stays open).
     */
    public static ModelWeights of(ParamLayout layout, MemorySegment flat, DType stored, boolean wantBf16) {
        if (stored == DType.F32) return wantBf16 ? bf16(layout, flat) : f32(layout, flat);
        if (stored != DType.BF16)
            throw new Moe4jException("weights: a flat buffer of " + stored + " cannot be used in place (F32 or BF16)");
        if (flat.byteSize() < layout.total() * 2)
            throw new Moe4jException("weights: the BF16 buffer holds " + flat.byteSize() + " bytes, the model needs "
                    + layout.total() * 2);
        Arena arena = Arena.ofShared();
        try {
            if (!wantBf16) {
                MemorySegment f = arena.allocate(layout.total() * Float.BYTES, Tensor.ALIGNMENT);
                for (long i = 0; i < layout.total(); i++)
                    f.setAtIndex(Tensor.FLOAT, i, WeightGemm.fromBf16(flat.getAtIndex(Tensor.SHORT, i)));
                return new ModelWeights(layout, f, f, false, null, arena);
            }
            Map<String, Long> offs = vectorOffsets(layout);
            MemorySegment vec = arena.allocate(Math.max(1, vectorCount(layout)) * Float.BYTES, Tensor.ALIGNMENT);
            for (ParamLayout.Entry e : layout.entries()) {
                if (!keptF32(e)) continue;
                long o = offs.get(e.name());
                for (long i = 0; i < e.numel(); i++)
                    vec.setAtIndex(Tensor.FLOAT, o + i, WeightGemm.fromBf16(flat.getAtIndex(Tensor.SHORT, e.offset() + i)));
            }
            return new ModelWeights(layout, vec, flat, true, offs, arena);
        } catch (RuntimeException | Error ex) {
            arena.close();
            throw ex;
        }
    }

    /** Element offsets of the F32-kept parameters in a compact F32 store, in layout order. */
    private static Map<String, Long> vectorOffsets(ParamLayout layout) {
        Map<String, Long> offs = new HashMap<>();
        long at = 0;
        for (ParamLayout.Entry e : layout.entries()) {
            if (keptF32(e)) {
                offs.put(e.name(), at);
                at += e.numel();
            }
        }
        return offs;
    }

    private static long vectorCount(ParamLayout layout) {
        long n = 0;
        for (ParamLayout.Entry e : layout.entries()) if (keptF32(e)) n += e.numel();
        return n;
    }

    /** Norm weights and routers stay F32 in every precision. */
    static boolean keptF32(ParamLayout.Entry e) {
        return e.shape().length == 1 || e.name().endsWith(".mlp.gate.weight");
    }

    public ParamLayout layout() {
        return layout;
    }

    /** Whether the matrices are BF16. */
    public boolean bf16() {
        return bf16;
    }

    public DType matrixType() {
        return bf16 ? DType.BF16 : DType.F32;
    }

    /** The F32 store of norm weights and routers. */
    public MemorySegment vectors() {
        return vectors;
    }

    /** The store of the matrices (F32 or BF16 elements at layout offsets). */
    public MemorySegment matrices() {
        return matrices;
    }

    /** Element offset of an F32-kept parameter (a norm weight or router) in {@link #vectors()}. */
    public long vectorOffset(String name) {
        if (vectorOffsets == null) return layout.offset(name);
        Long o = vectorOffsets.get(name);
        if (o == null) throw new Moe4jException("weights: '" + name + "' is not a norm weight or router");
        return o;
    }

    /** Element offset of a matrix in {@link #matrices()}. */
    public long matrixOffset(String name) {
        return layout.offset(name);
    }

    /** Bytes of the two stores. */
    public long byteSize() {
        return vectors == matrices ? matrices.byteSize() : vectors.byteSize() + matrices.byteSize();
    }

    /** out[i, :] = embedding row ids[i] for i in [0, n). */
    void embed(int[] ids, int n, MemorySegment out, int d, int vocab) {
        long emb = layout.offset(ParamLayout.embedTokens());
        if (!bf16) {
            Embedding.forward(matrices, emb, vocab, ids, out, 0, d, 0, n);
            return;
        }
        for (int i = 0; i < n; i++) {
            int id = ids[i];
            if (id < 0 || id >= vocab)
                throw new Moe4jException("embedding: token " + id + " at row " + i + " is outside [0, " + vocab + ")");
            long src = emb + (long) id * d, dst = (long) i * d;
            for (int j = 0; j < d; j++)
                out.setAtIndex(Tensor.FLOAT, dst + j, WeightGemm.fromBf16(matrices.getAtIndex(Tensor.SHORT, src + j)));
        }
    }

    @Override
    public void close() {
        if (arena != null) arena.close();
    }
}
