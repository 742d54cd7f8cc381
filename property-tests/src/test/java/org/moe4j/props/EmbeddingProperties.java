package org.moe4j.props;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.moe4j.props.KernelsSupport.assertClose;
import static org.moe4j.props.KernelsSupport.floats;
import static org.moe4j.props.KernelsSupport.gaussian;
import static org.moe4j.props.KernelsSupport.read;
import static org.moe4j.props.KernelsSupport.toDouble;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Random;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.junit.jupiter.api.Test;
import org.moe4j.Moe4jException;
import org.moe4j.reference.RefEmbedding;
import org.moe4j.simd.Embedding;

/**
 * Embedding gather (exact: a copy) and scatter-add backward vs the float64 twin, with repeated ids and the
 * columns split over two calls as two workers would. Backward tolerance: 1e-5 absolute + 1e-5 relative (float
 * sums of up to 64 repeats). Twin gradient vs central differences: 1e-6.
 */
class EmbeddingProperties {
    @Property(tries = 80)
    void gatherAndScatterMatchTwin(@ForAll @IntRange(min = 1, max = 40) int vocab,
                                   @ForAll @IntRange(min = 1, max = 300) int d, @ForAll @IntRange(min = 0, max = 64) int tokens,
                                   @ForAll boolean heapIds, @ForAll long seed) {
        Random rnd = new Random(seed);
        float[] table = gaussian(rnd, vocab * d, 1);
        float[] dtable0 = gaussian(rnd, vocab * d, 1);
        int[] ids = new int[tokens];
        for (int p = 0; p < tokens; p++) {
            ids[p] = rnd.nextInt(Math.min(vocab, 1 + rnd.nextInt(4) * 10)); // low ids repeat often
        }
        float[] dout = gaussian(rnd, tokens * d, 1);
        int pad = 2;
        int split = rnd.nextInt(d + 1);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment tab = floats(arena, table, pad);
            MemorySegment out = floats(arena, new float[tokens * d], pad);
            MemorySegment idSeg = KernelsSupport.ints(arena, ids, pad);
            MemorySegment dts = floats(arena, dtable0, pad);
            MemorySegment dos = floats(arena, dout, pad);
            if (heapIds) {
                Embedding.forward(tab, pad, vocab, ids, out, pad, d, 0, tokens);
                Embedding.backward(dos, pad, ids, dts, pad, vocab, d, 0, tokens, 0, split);
                Embedding.backward(dos, pad, ids, dts, pad, vocab, d, 0, tokens, split, d);
            } else {
                Embedding.forward(tab, pad, vocab, idSeg, pad, out, pad, d, 0, tokens / 2);
                Embedding.forward(tab, pad, vocab, idSeg, pad, out, pad, d, tokens / 2, tokens);
                Embedding.backward(dos, pad, idSeg, pad, dts, pad, vocab, d, 0, tokens, 0, split);
                Embedding.backward(dos, pad, idSeg, pad, dts, pad, vocab, d, 0, tokens, split, d);
            }
            assertClose("gather", read(out, pad, tokens * d), RefEmbedding.forward(toDouble(table), d, ids), 0, 0);
            double[] want = RefEmbedding.backward(toDouble(dout), d, ids, vocab);
            for (int i = 0; i < want.length; i++) {
                want[i] += dtable0[i];
            }
            assertClose("dtable", read(dts, pad, vocab * d), want, 1e-5, 1e-5);
            KernelsSupport.assertPadIntact("dtable", dts, pad, vocab * d);
            KernelsSupport.assertPadIntact("out", out, pad, tokens * d);
        }
    }

    @Property(tries = 20)
    void twinGradientMatchesFiniteDifferences(@ForAll @IntRange(min = 1, max = 5) int vocab,
                                              @ForAll @IntRange(min = 1, max = 4) int d, @ForAll long seed) {
        Random rnd = new Random(seed);
        int[] ids = new int[1 + rnd.nextInt(6)];
        for (int p = 0; p < ids.length; p++) {
            ids[p] = rnd.nextInt(vocab);
        }
        double[] table = toDouble(gaussian(rnd, vocab * d, 1));
        double[] proj = toDouble(gaussian(rnd, ids.length * d, 1));
        double[] g = RefEmbedding.backward(proj, d, ids, vocab);
        double[] fd = new double[table.length];
        for (int i = 0; i < table.length; i++) {
            fd[i] = KernelsSupport.centralDiff(t -> KernelsSupport.dot(RefEmbedding.forward(t, d, ids), proj), table, i, 1e-5);
        }
        assertClose("dtable vs finite differences", g, fd, 1e-6, 1e-6);
    }

    @Test
    void idOutOfRangeNamesPositionAndId() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment tab = floats(arena, new float[4 * 3], 0);
            MemorySegment out = floats(arena, new float[3 * 3], 0);
            Moe4jException e = assertThrows(Moe4jException.class,
                    () -> Embedding.forward(tab, 0, 4, new int[] {0, 3, 4}, out, 0, 3, 0, 3));
            assertTrue(e.getMessage().contains("token id 4") && e.getMessage().contains("position 2"), e.getMessage());
            MemorySegment ids = KernelsSupport.ints(arena, new int[] {-1, 0, 0}, 0);
            Moe4jException e2 = assertThrows(Moe4jException.class,
                    () -> Embedding.backward(out, 0, ids, 0, tab, 0, 4, 3, 0, 3, 0, 3));
            assertTrue(e2.getMessage().contains("token id -1") && e2.getMessage().contains("position 0"), e2.getMessage());
        }
    }
}
