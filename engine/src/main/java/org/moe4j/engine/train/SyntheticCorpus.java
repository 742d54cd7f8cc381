package org.moe4j.engine.train;

import java.util.SplittableRandom;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.ConfigException;

/**
 * A built-in multi-domain source that needs no data: each domain owns a disjoint band of the vocabulary and a
 * random sparse bigram table (every token has {@code branching} successors), so documents of different domains
 * use different tokens and different statistics — what an MoE's experts can specialise on. Documents have random
 * lengths and are packed into sequences, each opened by EOS. Batch i is a pure function of (seed, i), so a resumed
 * run sees exactly the batches it would have seen.
 */
public final class SyntheticCorpus implements BatchSource {
    private final int vocab, eosId, domains, branching;
    private final long seed;
    private final int[] bandStart, bandSize;
    private final int[][] next; // [vocab][branching] successors
    private long position;
    private int lastDomain;

    public SyntheticCorpus(int vocab, int eosId, int domains, int branching, long seed) {
        if (domains < 1) throw ConfigException.of("SyntheticCorpus.domains", domains, "must be >= 1");
        if (vocab < domains * 4 + 1)
            throw ConfigException.of("SyntheticCorpus.domains", domains, "the vocabulary of " + vocab
                    + " tokens holds at most " + (vocab - 1) / 4 + " domains (4 ids each, plus EOS)");
        if (branching < 1) throw ConfigException.of("SyntheticCorpus.branching", branching, "must be >= 1");
        this.vocab = vocab;
        this.eosId = eosId;
        this.domains = domains;
        this.branching = branching;
        this.seed = seed;
        bandStart = new int[domains];
        bandSize = new int[domains];
        int usable = vocab - 1, per = usable / domains;
        for (int k = 0; k < domains; k++) {
            bandStart[k] = k * per;
            bandSize[k] = per;
        }
        next = new int[vocab][branching];
        SplittableRandom r = new SplittableRandom(seed ^ 0x5EED5EEDL);
        for (int k = 0; k < domains; k++)
            for (int i = 0; i < bandSize[k]; i++)
                for (int b = 0; b < branching; b++) next[id(k, i)][b] = id(k, r.nextInt(bandSize[k]));
    }

    /** Token id of band position i of domain k, skipping EOS. */
    private int id(int k, int i) {
        int t = bandStart[k] + i;
        return t >= eosId ? t + 1 : t;
    }

    public int domains() {
        return domains;
    }

    /** The domain whose document filled the last position of the last batch (for examples and tests). */
    public int lastDomain() {
        return lastDomain;
    }

    /** The domain of a token id (-1 for EOS). */
    public int domainOf(int token) {
        if (token == eosId) return -1;
        int t = token > eosId ? token - 1 : token;
        return Math.min(domains - 1, t / bandSize[0]);
    }

    @Override
    public void next(int[] tokens, int batch, int T) {
        SplittableRandom r = new SplittableRandom(seed * 0x9E3779B97F4A7C15L + position);
        int n = batch * T;
        int i = 0;
        while (i < n) {
            int k = r.nextInt(domains);
            lastDomain = k;
            int len = 8 + r.nextInt(Math.max(1, T / 2));
            tokens[i++] = eosId;
            int cur = id(k, r.nextInt(bandSize[k]));
            for (int j = 0; j < len && i < n; j++) {
                tokens[i++] = cur;
                cur = next[cur][r.nextInt(branching)];
            }
        }
        position++;
    }

    @Override
    public long position() {
        return position;
    }

    @Override
    public void position(long p) {
        position = p;
    }

    @Override
    public String describe() {
        return "synthetic: " + domains + " domains, vocab " + vocab + ", " + branching + " successors per token";
    }
}
