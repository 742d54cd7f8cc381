package org.moe4j.io.corpus;

/**
 * Deterministic windows of {@code T + 1} tokens over a shard, for training on packed sequences: a window runs
 * across document boundaries (each document opens with EOS, so the boundaries stay visible to the model).
 *
 * <p>Epoch {@code e} cuts the shard into {@code W = (N - 1) / T} windows that start at {@code s_e + j·T}, with a
 * shift {@code s_e} in {@code [0, N - 1 - W·T]} drawn from the seed, so consecutive windows overlap by the one
 * token that is the last target of one and the first input of the next; the epoch visits them in a pseudo-random
 * permutation (a 4-round Feistel network over a power-of-4 domain, cycle-walked into {@code [0, W)}). The only state
 * is the data position, the number of windows drawn so far: {@link #position()} and {@link #position(long)} save
 * and restore it, and {@link #windowStart(long)} is a pure function of the position.
 */
public final class WindowSampler {
    private final TokenShard shard;
    private final int windowTokens;
    private final long seed;
    private final long windowsPerEpoch;
    private final long maxShift;
    private final int halfBits;
    private final long halfMask;
    private long position;

    /**
     * @param sequenceLength T: a window holds T inputs and, shifted by one, T targets
     */
    public WindowSampler(TokenShard shard, int sequenceLength, long seed) {
        if (sequenceLength <= 0) {
            throw new CorpusException(shard.path() + ": sequence length " + sequenceLength + " must be positive");
        }
        if (shard.tokenCount() < sequenceLength + 1L) {
            throw new CorpusException(shard.path() + ": " + shard.tokenCount() + " tokens, too few for one window of "
                    + (sequenceLength + 1) + " (sequence length " + sequenceLength + " + 1)");
        }
        this.shard = shard;
        this.windowTokens = sequenceLength + 1;
        this.seed = seed;
        this.windowsPerEpoch = (shard.tokenCount() - 1) / sequenceLength;
        this.maxShift = shard.tokenCount() - 1 - windowsPerEpoch * sequenceLength;
        int bits = Math.max(2, 64 - Long.numberOfLeadingZeros(windowsPerEpoch - 1));
        bits += bits & 1;
        this.halfBits = bits / 2;
        this.halfMask = (1L << halfBits) - 1;
    }

    public TokenShard shard() {
        return shard;
    }

    public long windowsPerEpoch() {
        return windowsPerEpoch;
    }

    /** Windows drawn so far; save it with a checkpoint. */
    public long position() {
        return position;
    }

    /** Restores a saved data position. */
    public void position(long position) {
        if (position < 0) {
            throw new CorpusException(shard.path() + ": data position " + position + " must be >= 0");
        }
        this.position = position;
    }

    /** Start token of the window at data position {@code p}; a pure function of (shard size, T, seed, p). */
    public long windowStart(long p) {
        if (p < 0) {
            throw new CorpusException(shard.path() + ": data position " + p + " must be >= 0");
        }
        long epoch = p / windowsPerEpoch;
        long index = p % windowsPerEpoch;
        long epochKey = Hashing.mix(seed ^ Hashing.mix(epoch + 0x9E3779B97F4A7C15L));
        long shift = maxShift == 0 ? 0 : Long.remainderUnsigned(epochKey, maxShift + 1);
        return shift + permute(index, epochKey) * (windowTokens - 1L);
    }

    /**
     * Fills {@code tokens[0 .. T]} with the next window and advances the position; {@code domains}, when not
     * null, gets each token's domain id. Returns the window's start token.
     */
    public long next(int[] tokens, int[] domains) {
        if (tokens.length < windowTokens || (domains != null && domains.length < windowTokens)) {
            throw new CorpusException(shard.path() + ": a window needs arrays of " + windowTokens + " (T + 1) elements");
        }
        long start = windowStart(position);
        shard.read(start, tokens, 0, windowTokens);
        if (domains != null) {
            shard.readDocuments(start, windowTokens, null, domains);
        }
        position++;
        return start;
    }

    /** A bijection of [0, windowsPerEpoch) keyed by {@code key}: Feistel rounds, cycle-walked into range. */
    private long permute(long index, long key) {
        long x = index;
        do {
            long left = x >>> halfBits;
            long right = x & halfMask;
            for (int round = 0; round < 4; round++) {
                long f = Hashing.mix(right ^ Hashing.mix(key + round)) & halfMask;
                long next = left ^ f;
                left = right;
                right = next;
            }
            x = (left << halfBits) | right;
        } while (x >= windowsPerEpoch);
        return x;
    }
}
