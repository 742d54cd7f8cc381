package org.moe4j.engine.routing;

import org.moe4j.Moe4jException;

/**
 * The random stream routing draws from (Matryoshka k, EMO pool sizes): SplitMix64 with state the caller owns, so a
 * run is reproducible from its seed and its state can be saved and restored. Allocation-free.
 */
public final class RoutingRng {
    private static final long GOLDEN = 0x9E3779B97F4A7C15L;
    private long state;

    public RoutingRng(long seed) {
        this.state = seed;
    }

    public long state() {
        return state;
    }

    public void setState(long s) {
        state = s;
    }

    public long nextLong() {
        long z = (state += GOLDEN);
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    /** Uniform in [0, 1), 53 bits. */
    public double nextDouble() {
        return (nextLong() >>> 11) * 0x1.0p-53;
    }

    /** Uniform in [0, bound), unbiased (rejection). */
    public int nextInt(int bound) {
        if (bound <= 0) throw new Moe4jException("RoutingRng.nextInt: bound = " + bound + ": must be > 0");
        long limit = (1L << 31) - ((1L << 31) % bound);
        while (true) {
            long r = nextLong() >>> 33;
            if (r < limit) return (int) (r % bound);
        }
    }

    /** Uniform in [lo, hi]. */
    public int nextInt(int lo, int hi) {
        return lo + nextInt(hi - lo + 1);
    }
}
