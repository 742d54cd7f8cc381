package org.moe4j.engine.train;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.ConfigException;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.io.corpus.ShardManifest;
import org.moe4j.io.corpus.Split;
import org.moe4j.io.corpus.TokenShard;
import org.moe4j.io.corpus.WindowSampler;

/**
 * Batches from one split of a prepared shard folder ({@code moe4j prepare-data}): each sequence of T tokens is a
 * {@link WindowSampler} window over the packed shard, so it runs across documents (each opened by EOS). The
 * transformer predicts token t+1 from token t within a sequence, so a sequence of T tokens carries T - 1 labels; the
 * sampler is cut with sequence length T - 1 (windows of T tokens, consecutive ones overlapping by one), which makes
 * every transition of the shard a label exactly once per epoch (but the fewer than T - 1 that the epoch's random
 * shift leaves at the ends).
 *
 * <p>Deterministic from (shard, T, seed). The data position is the sampler's: windows drawn so far, B per batch;
 * restoring it ({@link #position(long)}) continues exactly where a run stopped, even with another batch size.
 * The domain id of every token of the last batch is kept ({@link #lastDomains()}) for per-domain figures.
 *
 * <p>Data parallel ({@link #shard(int, int)}): rank r of W reads only its share of each global batch of W·B windows,
 * the windows at positions p + r·B .. p + r·B + B - 1, and the position stays the global one (p advances by W·B).
 * So W ranks together read exactly the windows one process reads with batch W·B, in the same order, and a checkpoint's
 * position resumes with any number of ranks.
 */
public final class ShardBatchSource implements BatchSource, AutoCloseable {
    private final TokenShard shard;
    private final ShardManifest manifest;
    private final Split split;
    private final int seqLen;
    private final WindowSampler sampler;
    private final int[] windowTokens, windowDomains;
    private int[] domains = new int[0];
    private int rank, ranks = 1;

    /**
     * Opens {@code split} of the shard folder {@code dir} for sequences of {@code seqLen} tokens.
     *
     * @throws org.moe4j.io.corpus.CorpusException when the folder, manifest or shard is unreadable or too small
     */
    public static ShardBatchSource open(Path dir, Split split, int seqLen, long seed) {
        ShardManifest m = ShardManifest.read(dir);
        TokenShard shard = m.open(dir, split);
        try {
            return new ShardBatchSource(shard, m, split, seqLen, seed);
        } catch (RuntimeException e) {
            shard.close();
            throw e;
        }
    }

    /** Takes ownership of {@code shard} (closed by {@link #close()}); {@code manifest} may be null. */
    public ShardBatchSource(TokenShard shard, ShardManifest manifest, Split split, int seqLen, long seed) {
        if (seqLen < 2)
            throw ConfigException.of("ShardBatchSource.seqLen", seqLen, "a sequence needs >= 2 tokens (one label needs two)");
        this.shard = shard;
        this.manifest = manifest;
        this.split = split;
        this.seqLen = seqLen;
        this.sampler = new WindowSampler(shard, seqLen - 1, seed);
        this.windowTokens = new int[seqLen];
        this.windowDomains = new int[seqLen];
    }

    /**
     * Checks that this shard's token ids fit {@code c}: the same EOS id and a vocabulary no larger than the
     * model's; the message names the shard, both figures and what to do.
     */
    public ShardBatchSource checkFits(ModelConfig c) {
        if (shard.vocabSize() > c.vocab() || shard.eosId() != c.eosId())
            throw new Moe4jException(shard.path() + ": the shard has vocabulary " + shard.vocabSize() + " and EOS id "
                    + shard.eosId() + ", the model has vocabulary " + c.vocab() + " and EOS id " + c.eosId()
                    + ": prepare the data with the model's tokenizer, or train a new model on this folder");
        return this;
    }

    /** Fills tokens[0 .. batch*T) with {@code batch} windows of T tokens; T must be the one this source was opened for. */
    @Override
    public void next(int[] tokens, int batch, int T) {
        if (T != seqLen)
            throw new Moe4jException(shard.path() + ": batches of " + T + " tokens per sequence asked of a source opened for " + seqLen);
        if (domains.length != batch * T) domains = new int[batch * T];
        if (ranks > 1) sampler.position(sampler.position() + (long) rank * batch); // skip the ranks before this one
        for (int b = 0; b < batch; b++) {
            sampler.next(windowTokens, windowDomains);
            System.arraycopy(windowTokens, 0, tokens, b * T, T);
            System.arraycopy(windowDomains, 0, domains, b * T, T);
        }
        if (ranks > 1) sampler.position(sampler.position() + (long) (ranks - 1 - rank) * batch);
    }

    /** Makes this source rank {@code rank}'s share of {@code ranks} (see the class comment); (0, 1) is the whole. */
    public ShardBatchSource shard(int rank, int ranks) {
        if (ranks < 1 || rank < 0 || rank >= ranks)
            throw new Moe4jException(shard.path() + ": rank " + rank + " of " + ranks + ": need 0 <= rank < ranks");
        this.rank = rank;
        this.ranks = ranks;
        return this;
    }

    /** Domain id of each token of the last batch, [batch*T] (names: {@link #domainNames()}); valid until the next call. */
    public int[] lastDomains() {
        return domains;
    }

    /** Domain names by id, from the manifest (ids as names when there is none). */
    public List<String> domainNames() {
        if (manifest != null) return manifest.domains();
        List<String> names = new ArrayList<>();
        for (int i = 0; i < shard.domainCount(); i++) names.add(Integer.toString(i));
        return names;
    }

    public TokenShard shard() {
        return shard;
    }

    public int seqLen() {
        return seqLen;
    }

    /** Windows per pass over the split. */
    public long windowsPerEpoch() {
        return sampler.windowsPerEpoch();
    }

    /** Windows drawn so far (the sampler's data position). */
    @Override
    public long position() {
        return sampler.position();
    }

    @Override
    public void position(long p) {
        sampler.position(p);
    }

    @Override
    public String describe() {
        return String.format(Locale.ROOT, "%s split of %s: %,d tokens, %,d documents, %d domains, vocabulary %d (EOS %d), %,d windows of %d per epoch",
                split.stem(), shard.path().getParent(), shard.tokenCount(), shard.documentCount(), shard.domainCount(),
                shard.vocabSize(), shard.eosId(), sampler.windowsPerEpoch(), seqLen);
    }

    @Override
    public void close() {
        shard.close();
    }
}
