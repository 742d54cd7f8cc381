package org.moe4j.props.model;

import java.util.SplittableRandom;
import net.jqwik.api.Assume;
import org.moe4j.engine.model.MoeTransformer;
import org.moe4j.engine.routing.Routing;
import org.moe4j.reference.model.RefResult;

/** What the properties that run the engine against the float64 reference model share. */
public final class EngineCases {
    private EngineCases() {
    }

    /** 1..3 sequences of 2..6 tokens (1..6 each when ragged); about one token in four is EOS. */
    public static int[][] randomTokens(SplittableRandom r, int vocab, int eos, boolean ragged) {
        int B = 1 + r.nextInt(3);
        int[][] tokens = new int[B][];
        int len0 = 2 + r.nextInt(5);
        for (int b = 0; b < B; b++) {
            int len = ragged ? 1 + r.nextInt(6) : len0;
            tokens[b] = new int[len];
            for (int t = 0; t < len; t++) tokens[b][t] = r.nextInt(4) == 0 ? eos : r.nextInt(vocab);
        }
        return tokens;
    }

    /** seqStart[0..B]: where each sequence starts in the packed batch. */
    public static int[] starts(int[][] tokens) {
        int[] starts = new int[tokens.length + 1];
        for (int b = 0; b < tokens.length; b++) starts[b + 1] = starts[b] + tokens[b].length;
        return starts;
    }

    /** The sequences packed one after the other. */
    public static int[] flatten(int[][] tokens) {
        int[] starts = starts(tokens);
        int[] flat = new int[starts[tokens.length]];
        for (int b = 0; b < tokens.length; b++) System.arraycopy(tokens[b], 0, flat, starts[b], tokens[b].length);
        return flat;
    }

    /**
     * Discards the case (jqwik Assume) unless the engine's last forward picked the same experts in the same order
     * as the reference (and, with {@code drops}, dropped the same slots): a near-tie resolved differently in
     * float32 and float64 is not a bug, and the two runs would then compute different functions.
     */
    public static void assumeSameRouting(MoeTransformer tr, RefResult ref, int[][] tokens, boolean drops) {
        int[] starts = starts(tokens);
        for (int l = 0; l < ref.kRouted().length; l++) {
            Routing r = tr.routing(l);
            for (int b = 0; b < tokens.length; b++)
                for (int t = 0; t < tokens[b].length; t++) {
                    int[] want = ref.experts()[l][b][t];
                    int row = starts[b] + t, at = 0;
                    for (int j = 0; j < r.kTot(); j++) {
                        int e = r.expert[row * r.kTot() + j];
                        if (e < 0) continue;
                        Assume.that(at < want.length && want[at] == e
                                && (!drops || r.dropped[row * r.kTot() + j] == ref.dropped()[l][b][t][at]));
                        at++;
                    }
                    Assume.that(at == want.length);
                }
        }
    }
}
