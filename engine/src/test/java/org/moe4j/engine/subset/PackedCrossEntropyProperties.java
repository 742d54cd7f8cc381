package org.moe4j.engine.subset;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.WorkerPool;

/**
 * The evaluation's cross-entropy of packed sequences (vectorised, on the pool) equals the float64 reference summed
 * sequence by sequence, on random vocabularies (vector tails included), sequence lengths (1: no label) and logit
 * scales; and gives the same bits on one thread and on three.
 */
class PackedCrossEntropyProperties {
    static final WorkerPool ONE = new WorkerPool(1), THREE = new WorkerPool(3);

    @Property(tries = 60)
    void packedSumEqualsTheFloat64Reference(@ForAll @IntRange(min = 1, max = 300) int vocab,
                                            @ForAll @IntRange(min = 1, max = 6) int count,
                                            @ForAll @IntRange(min = 1, max = 40) int longest,
                                            @ForAll @IntRange(min = 0, max = 3) int scaleExp, @ForAll long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        double scale = Math.pow(10, scaleExp - 1); // 0.1 .. 100: flat to peaked softmax rows
        List<int[]> seqs = new ArrayList<>();
        seqs.add(new int[] {r.nextInt(vocab)}); // a sequence before the packed ones: `from` is honoured
        int[] starts = new int[count + 1];
        for (int j = 0; j < count; j++) {
            int[] s = new int[1 + r.nextInt(longest)];
            for (int t = 0; t < s.length; t++) s[t] = r.nextInt(vocab);
            seqs.add(s);
            starts[j + 1] = starts[j] + s.length;
        }
        int rows = starts[count];
        try (Arena arena = Arena.ofShared();
             PackedCrossEntropy ces = new PackedCrossEntropy(rows + r.nextInt(5))) {
            MemorySegment logits = arena.allocate((long) rows * vocab * Float.BYTES, Tensor.ALIGNMENT);
            for (long i = 0; i < (long) rows * vocab; i++) logits.setAtIndex(Tensor.FLOAT, i, (float) (scale * r.nextGaussian()));
            double ref = 0;
            long labels = 0;
            for (int j = 0; j < count; j++) {
                int[] s = seqs.get(1 + j);
                ref += Evaluator.crossEntropySum(logits, (long) starts[j] * vocab, s, vocab);
                labels += s.length - 1;
            }
            double one = ces.sum(logits, vocab, seqs, 1, starts, count, ONE);
            double three = ces.sum(logits, vocab, seqs, 1, starts, count, THREE);
            assertEquals(ref, one, 1e-5 * labels + 1e-6 * Math.abs(ref), "vocab " + vocab + ", " + labels + " labels");
            assertEquals(Double.doubleToLongBits(one), Double.doubleToLongBits(three), "1 thread vs 3: " + one + " vs " + three);
            int[] first = seqs.get(1);
            if (first.length > 1)
                assertEquals(Evaluator.crossEntropySum(logits, 0, new int[] {first[0], first[1]}, vocab),
                        ces.row(logits, vocab, first[1]), 1e-5 + 1e-6 * scale, "one decode row");
        }
    }
}
