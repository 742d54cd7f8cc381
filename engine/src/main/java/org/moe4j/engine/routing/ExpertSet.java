package org.moe4j.engine.routing;

import java.util.Arrays;
import org.moe4j.Moe4jException;

/**
 * A set of expert indices in [0, E): one type for EMO document pools and for deployment subsets, so training
 * restrictions and pruned inference share code. A bitset over E; every operation but {@link #toString()} and the
 * factories is allocation-free.
 */
public final class ExpertSet {
    private final int experts;
    private final long[] words;

    /** An empty set over E experts. */
    public ExpertSet(int experts) {
        if (experts <= 0) throw new Moe4jException("ExpertSet: experts = " + experts + ": must be > 0");
        this.experts = experts;
        this.words = new long[(experts + 63) >>> 6];
    }

    public static ExpertSet all(int experts) {
        ExpertSet s = new ExpertSet(experts);
        s.addRange(0, experts);
        return s;
    }

    public static ExpertSet of(int experts, int... ids) {
        ExpertSet s = new ExpertSet(experts);
        for (int e : ids) s.add(e);
        return s;
    }

    /** E, the universe size. */
    public int experts() {
        return experts;
    }

    private void check(int e) {
        if (e < 0 || e >= experts)
            throw new Moe4jException("ExpertSet: expert " + e + " is outside [0, " + experts + ")");
    }

    public boolean contains(int e) {
        return e >= 0 && e < experts && (words[e >>> 6] & (1L << e)) != 0;
    }

    public ExpertSet add(int e) {
        check(e);
        words[e >>> 6] |= 1L << e;
        return this;
    }

    public ExpertSet remove(int e) {
        check(e);
        words[e >>> 6] &= ~(1L << e);
        return this;
    }

    /** Adds [from, to). */
    public ExpertSet addRange(int from, int to) {
        if (from < 0 || to > experts || from > to)
            throw new Moe4jException("ExpertSet: range [" + from + ", " + to + ") is outside [0, " + experts + "]");
        for (int e = from; e < to; e++) words[e >>> 6] |= 1L << e;
        return this;
    }

    public ExpertSet clear() {
        Arrays.fill(words, 0L);
        return this;
    }

    private void sameUniverse(ExpertSet o) {
        if (o.experts != experts)
            throw new Moe4jException("ExpertSet: sets over " + experts + " and " + o.experts + " experts cannot be combined");
    }

    public ExpertSet copyFrom(ExpertSet o) {
        sameUniverse(o);
        System.arraycopy(o.words, 0, words, 0, words.length);
        return this;
    }

    /** this = this ∩ o. */
    public ExpertSet retainAll(ExpertSet o) {
        sameUniverse(o);
        for (int i = 0; i < words.length; i++) words[i] &= o.words[i];
        return this;
    }

    /** this = this ∪ o. */
    public ExpertSet addAll(ExpertSet o) {
        sameUniverse(o);
        for (int i = 0; i < words.length; i++) words[i] |= o.words[i];
        return this;
    }

    /** true when every member of this set is in o. */
    public boolean isSubsetOf(ExpertSet o) {
        sameUniverse(o);
        for (int i = 0; i < words.length; i++) if ((words[i] & ~o.words[i]) != 0) return false;
        return true;
    }

    public int size() {
        int n = 0;
        for (long w : words) n += Long.bitCount(w);
        return n;
    }

    /** Members in [from, to). */
    public int sizeInRange(int from, int to) {
        int n = 0;
        for (int e = nextMember(from); e >= 0 && e < to; e = nextMember(e + 1)) n++;
        return n;
    }

    public boolean isEmpty() {
        for (long w : words) if (w != 0) return false;
        return true;
    }

    /** The smallest member >= from, or -1. Iterate with {@code for (e = s.nextMember(0); e >= 0; e = s.nextMember(e + 1))}. */
    public int nextMember(int from) {
        if (from < 0) from = 0;
        if (from >= experts) return -1;
        int wi = from >>> 6;
        long w = words[wi] & (-1L << from);
        while (true) {
            if (w != 0) {
                int e = (wi << 6) + Long.numberOfTrailingZeros(w);
                return e < experts ? e : -1;
            }
            if (++wi == words.length) return -1;
            w = words[wi];
        }
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof ExpertSet s && s.experts == experts && Arrays.equals(s.words, words);
    }

    @Override
    public int hashCode() {
        return 31 * experts + Arrays.hashCode(words);
    }

    @Override
    public String toString() {
        StringBuilder b = new StringBuilder("{");
        for (int e = nextMember(0); e >= 0; e = nextMember(e + 1)) {
            if (b.length() > 1) b.append(',');
            b.append(e);
        }
        return b.append("}/").append(experts).toString();
    }
}
