package org.moe4j.reference.tokenizer;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The plain twin of BPE encoding within one piece: rescan the whole piece for the adjacent pair with the lowest
 * rank (leftmost among equals), merge that one pair, repeat. Quadratic, with token strings instead of ids.
 */
public final class RefBpe {
    private final Map<String, Integer> ranks = new HashMap<>();

    /** {@code merges} as "left right", by rank; a repeated rule takes its last rank. */
    public RefBpe(List<String> merges) {
        for (int r = 0; r < merges.size(); r++) {
            ranks.put(merges.get(r), r);
        }
    }

    /** The tokens (byte-level spelling) of one pre-token piece. */
    public List<String> encodePiece(String piece) {
        char[] byteChar = RefBpeTrainer.byteChars();
        List<String> sym = new ArrayList<>();
        for (byte b : piece.getBytes(StandardCharsets.UTF_8)) {
            sym.add(String.valueOf(byteChar[b & 0xFF]));
        }
        while (true) {
            int best = -1;
            int bestRank = Integer.MAX_VALUE;
            for (int i = 0; i + 1 < sym.size(); i++) {
                Integer r = ranks.get(sym.get(i) + " " + sym.get(i + 1));
                if (r != null && r < bestRank) {
                    bestRank = r;
                    best = i;
                }
            }
            if (best < 0) {
                return sym;
            }
            sym.set(best, sym.get(best) + sym.remove(best + 1));
        }
    }
}
