package org.moe4j.engine.train.distributed;

import org.moe4j.Moe4jException;
import org.moe4j.engine.train.BatchSource;
import org.moe4j.engine.train.ShardBatchSource;

/**
 * Rank r of W's share of a batch source: of every global batch of W·B sequences, sequences r·B .. r·B + B - 1, so W
 * ranks with batch B see exactly what one process sees with batch W·B. A shard folder is read in place (each rank
 * reads only its own windows, {@link ShardBatchSource#shard}); any other source (the synthetic one) is drawn whole
 * and sliced, which costs little for a generated source and keeps its position in global batches.
 */
public final class RankShards {
    private RankShards() {
    }

    public static BatchSource of(BatchSource src, int rank, int ranks) {
        if (ranks < 1 || rank < 0 || rank >= ranks)
            throw new Moe4jException("RankShards: rank " + rank + " of " + ranks + ": need 0 <= rank < ranks");
        if (ranks == 1) return src;
        if (src instanceof ShardBatchSource s) return s.shard(rank, ranks);
        return new Sliced(src, rank, ranks);
    }

    /** Draws the global batch into a buffer kept between calls and copies this rank's slice out. */
    private static final class Sliced implements BatchSource {
        private final BatchSource src;
        private final int rank, ranks;
        private int[] global = new int[0];

        Sliced(BatchSource src, int rank, int ranks) {
            this.src = src;
            this.rank = rank;
            this.ranks = ranks;
        }

        @Override
        public void next(int[] tokens, int batch, int T) {
            int n = batch * T;
            if (global.length != n * ranks) global = new int[n * ranks];
            src.next(global, batch * ranks, T);
            System.arraycopy(global, rank * n, tokens, 0, n);
        }

        @Override
        public long position() {
            return src.position();
        }

        @Override
        public void position(long p) {
            src.position(p);
        }

        @Override
        public String describe() {
            return src.describe() + " (rank " + rank + " of " + ranks + ": its share of each global batch)";
        }
    }
}
