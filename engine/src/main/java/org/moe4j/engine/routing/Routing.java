package org.moe4j.engine.routing;

/**
 * The result of routing one layer over T tokens; preallocated for (maxTokens, E) by {@link Router} and overwritten
 * by every {@link Router#forward} call. Slots: token t has {@link #kTot()} = k' + s slots at {@code t*kTot + j};
 * j < k' are its routed picks in rank order (first choice first), j >= k' its shared experts (E-s .. E-1, gate 1).
 * A routed slot that a small pool cannot fill has expert -1 and gate 0.
 */
public final class Routing {
    /** expert[t*kTot + j], -1 = empty slot. */
    public final int[] expert;
    /** gate[t*kTot + j]: p of the picked expert (divided by the picked sum when normalizeTopK), 1 for shared. */
    public final float[] gate;
    /** dropped[t*kTot + j]: the slot passed its expert's capacity; the token keeps its residual for it. */
    public final boolean[] dropped;
    /** prob[t*E + e]: the gate softmax over token t's softmax domain (routed columns only; 0 elsewhere). */
    public final float[] prob;
    /** lse[t]: logsumexp of the routed logits over token t's softmax domain (router z-loss). */
    public final float[] lse;
    /** Assignments per expert before and after capacity drops (shared experts: T each, never dropped). */
    public final int[] countBefore, countAfter;
    /** perm[offsets[e] .. offsets[e+1]) = the kept slots of expert e, in token order (counting sort by expert). */
    public final int[] offsets, perm;
    /** dropsAtPosition[p]: dropped slots of tokens at position p of their sequence. */
    public final int[] dropsAtPosition;
    /** seqStart[i] .. seqStart[i+1]: tokens of sequence (routing group) i. */
    public final int[] seqStart;
    /** capacity[i]: the capacity C of group i (0 when no capacity factor). */
    public final int[] capacity;
    /** docStart[d] .. docStart[d+1]: tokens of document d; docOfToken[t] = d. */
    public final int[] docStart, docOfToken;
    /** pool[d]: the routed experts document d may use (the EMO pool; without pools, every kept routed expert). */
    public final ExpertSet[] pool;
    /** The kept routed experts (the subset's routed part, or all E - s). */
    public final ExpertSet keptRouted;
    /**
     * Data parallel ({@link RoutingControl.Replicas}): routed assignments per expert before drops [E] and tokens
     * [at E], summed over every rank's micro-batch; {@code replicated} is false in a single process.
     */
    final double[] globalCounts;
    boolean replicated;

    final int experts, shared, maxTokens, maxSlots;
    int tokens, kRouted, kTot, routedKept, sequences, documents, dropCount, keptSlots;
    boolean hasPools;

    Routing(int experts, int shared, int maxTokens, int maxSequences) {
        this.experts = experts;
        this.shared = shared;
        this.maxTokens = maxTokens;
        this.maxSlots = maxTokens * experts;
        expert = new int[maxSlots];
        gate = new float[maxSlots];
        dropped = new boolean[maxSlots];
        perm = new int[maxSlots];
        prob = new float[maxTokens * experts];
        lse = new float[maxTokens];
        countBefore = new int[experts];
        countAfter = new int[experts];
        offsets = new int[experts + 1];
        dropsAtPosition = new int[maxTokens];
        seqStart = new int[maxSequences + 1];
        capacity = new int[maxSequences];
        docStart = new int[maxTokens + 1];
        docOfToken = new int[maxTokens];
        pool = new ExpertSet[Math.max(1, maxTokens)];
        for (int i = 0; i < pool.length; i++) pool[i] = new ExpertSet(experts);
        keptRouted = new ExpertSet(experts);
        globalCounts = new double[experts + 1];
    }

    /** T, tokens routed by the last call. */
    public int tokens() {
        return tokens;
    }

    /** E. */
    public int experts() {
        return experts;
    }

    /** s, the shared experts (the last s indices). */
    public int shared() {
        return shared;
    }

    /** k', routed picks per token in this call (Matryoshka's draw, clamped to E'). */
    public int kRouted() {
        return kRouted;
    }

    /** k' + s, the slot stride per token. */
    public int kTot() {
        return kTot;
    }

    /** E', the kept routed experts (the subset's routed size). */
    public int routedKept() {
        return routedKept;
    }

    public int sequences() {
        return sequences;
    }

    public int documents() {
        return documents;
    }

    /** Whether document pools restricted the experts in this call. */
    public boolean hasPools() {
        return hasPools;
    }

    /** Dropped slots in total. */
    public int dropCount() {
        return dropCount;
    }

    /** Kept (non-empty, non-dropped) slots = offsets[E]. */
    public int keptSlots() {
        return keptSlots;
    }

    /** The sequence (routing group) of token t. */
    public int sequenceOf(int t) {
        int lo = 0, hi = sequences - 1;
        while (lo < hi) {
            int mid = (lo + hi + 1) >>> 1;
            if (seqStart[mid] <= t) lo = mid;
            else hi = mid - 1;
        }
        return lo;
    }
}
