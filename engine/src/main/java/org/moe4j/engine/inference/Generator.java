package org.moe4j.engine.inference;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.config.PoolMode;
import org.moe4j.engine.model.ForwardRunner;
import org.moe4j.engine.routing.ExpertSet;
import org.moe4j.simd.Gemm;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.WorkerPool;

/**
 * Generates text for many sessions at once on one {@link InferenceModel}: a KV cache of {@code slots} sequences and a
 * scheduler. Each {@link #step()} first prefills the prompts of waiting sessions that fit (up to {@code prefillTokens}
 * rows in all, one forward per prompt), sampling their first tokens, then decodes one token for every other running
 * session in one forward — so each expert's rows from all sequences form one weight product. A sequence's logits do
 * not depend on the other sequences, to the bit: its prompt is prefilled on its own, and a decode step's products
 * all run on the weight-streaming kernel, which rounds each row the same whatever the number of rows. Sessions join and
 * leave between steps; a session waits in the queue while every slot is taken.
 *
 * <p>{@link #submit} may be called from any thread; {@link #step()} (and the listeners) run on one thread at a time.
 * A decode step allocates nothing on the heap (without a tokenizer's text decoding).
 */
public final class Generator implements AutoCloseable {
    /**
     * @param slots          sequences decoded together (the KV cache's slots)
     * @param maxPositions   prompt + new tokens per sequence (at most the model's max_position_embeddings; 0 = that)
     * @param prefillTokens  prompt rows prefilled per step, one forward per prompt (0 = maxPositions); a longer prompt
     *                       is refused
     * @param kPerLayer      k' per layer (elastic k), or null for the model's k
     * @param subset         the kept experts per layer (a subset applied as a mask), or null for all
     * @param emoPool        route each document inside its frozen EMO evaluation pool (0 = off, -1 = the checkpoint's evalPool when it is an EMO model)
     * @param bf16Kv         keep the KV cache in BF16 (half its memory and of the bytes a decode step reads from it)
     *                       instead of F32
     */
    public record Options(int slots, int maxPositions, int prefillTokens, int[] kPerLayer, ExpertSet[] subset,
                          int emoPool, boolean bf16Kv, Gemm gemm, WorkerPool pool) {
        public static Options defaults(Gemm gemm, WorkerPool pool) {
            return new Options(8, 0, 0, null, null, -1, false, gemm, pool);
        }

        public Options withSlots(int s) {
            return new Options(s, maxPositions, prefillTokens, kPerLayer, subset, emoPool, bf16Kv, gemm, pool);
        }

        public Options withPositions(int p) {
            return new Options(slots, p, prefillTokens, kPerLayer, subset, emoPool, bf16Kv, gemm, pool);
        }

        public Options withRouting(int[] k, ExpertSet[] s) {
            return new Options(slots, maxPositions, prefillTokens, k == null ? null : k.clone(), s, emoPool, bf16Kv, gemm, pool);
        }

        public Options withEmoPool(int p) {
            return new Options(slots, maxPositions, prefillTokens, kPerLayer, subset, p, bf16Kv, gemm, pool);
        }

        /** A BF16 KV cache when {@code bf16}, else F32 (the default). */
        public Options withKvBf16(boolean bf16) {
            return new Options(slots, maxPositions, prefillTokens, kPerLayer, subset, emoPool, bf16, gemm, pool);
        }
    }

    private final InferenceModel model;
    private final ModelConfig c;
    private final ForwardRunner runner;
    private final int slots, maxPositions, prefillTokens, eosId;
    private final ArrayDeque<GenerationSession> queue = new ArrayDeque<>();
    private final GenerationSession[] running;
    private final int[] tok, starts, first, slotOf;
    private final GenerationSession[] rowSession;
    private long nextId;
    // totals for reports
    private long prefillRows, prefillNanos, decodeRows, decodeSteps, decodeNanos;

    Generator(InferenceModel model, Options o) {
        this.model = model;
        this.c = model.config();
        if (o.slots() < 1) throw new Moe4jException("generator: slots = " + o.slots() + " must be >= 1");
        this.slots = o.slots();
        this.maxPositions = o.maxPositions() <= 0 ? c.maxSeq() : o.maxPositions();
        if (maxPositions > c.maxSeq())
            throw new Moe4jException("generator: " + maxPositions + " positions per sequence; the model's "
                    + "max_position_embeddings is " + c.maxSeq());
        this.prefillTokens = o.prefillTokens() <= 0 ? maxPositions : o.prefillTokens();
        this.eosId = c.eosId();
        int maxK = c.routedK();
        if (o.kPerLayer() != null) {
            if (o.kPerLayer().length != c.layers())
                throw new Moe4jException("--k-per-layer: " + o.kPerLayer().length + " values for " + c.layers() + " layers");
            for (int l = 0; l < c.layers(); l++) {
                int k = o.kPerLayer()[l];
                if (k < 1 || k > c.routedExperts())
                    throw new Moe4jException("--k-per-layer: k' = " + k + " at layer " + l + " is out of range 1.."
                            + c.routedExperts() + " (the model's routed experts)");
                maxK = Math.max(maxK, k);
            }
        }
        if (o.subset() != null && o.subset().length != c.layers())
            throw new Moe4jException("subset: " + o.subset().length + " layers given, the model has " + c.layers());
        int rows = Math.max(prefillTokens, slots);
        runner = new ForwardRunner(model.weights(), rows, slots, maxPositions, maxK, false, o.bf16Kv(), o.gemm(), o.pool());
        try {
            runner.routing(o.kPerLayer(), o.subset());
            int pool = o.emoPool();
            if (pool < 0) pool = c.routing().pool().mode() == PoolMode.EMO ? c.routing().pool().evalPool() : 0;
            runner.generationPools(pool);
        } catch (RuntimeException e) {
            runner.close();
            throw e;
        }
        running = new GenerationSession[slots];
        tok = new int[rows];
        starts = new int[rows + 1];
        first = new int[rows];
        slotOf = new int[rows];
        rowSession = new GenerationSession[rows];
    }

    public InferenceModel model() {
        return model;
    }

    /** The runner (k', subset, pools) this generator drives. */
    public ForwardRunner runner() {
        return runner;
    }

    /** Queues a generation; it starts at a later {@link #step()} when a slot is free. */
    public GenerationSession submit(GenerationRequest r, TokenListener listener) {
        int[] p = r.prompt();
        for (int i = 0; i < p.length; i++)
            if (p[i] < 0 || p[i] >= c.vocab())
                throw new Moe4jException("prompt token " + p[i] + " at position " + i + " is outside the vocabulary [0, "
                        + c.vocab() + ")");
        if (p.length > prefillTokens || p.length >= maxPositions)
            throw new Moe4jException("prompt of " + p.length + " tokens: this generator takes prompts of at most "
                    + Math.min(prefillTokens, maxPositions - 1) + " tokens (max positions " + maxPositions + ")");
        GenerationSession s;
        synchronized (queue) {
            s = new GenerationSession(nextId++, r, listener, model.tokenizer(), c.vocab());
            if (r.maxNewTokens() == 0) {
                s.finish(GenerationSession.FinishReason.LENGTH);
                return s;
            }
            queue.add(s);
        }
        return s;
    }

    /** Whether any session is queued or running. */
    public boolean busy() {
        synchronized (queue) {
            if (!queue.isEmpty()) return true;
        }
        for (GenerationSession s : running) if (s != null) return true;
        return false;
    }

    /** Runs steps until every submitted session has finished. */
    public void runUntilIdle() {
        while (busy()) step();
    }

    /** Submits the requests, runs them to the end together, and returns their sessions in order. */
    public List<GenerationSession> generate(List<GenerationRequest> requests, TokenListener listener) {
        List<GenerationSession> out = new ArrayList<>();
        for (GenerationRequest r : requests) out.add(submit(r, listener));
        runUntilIdle();
        return out;
    }

    /** One scheduler step: prefill joiners, then decode one token for every running session. */
    public void step() {
        // sessions that were running before this step decode; joiners get their first token from the prefill
        int nDecode = 0;
        for (int sl = 0; sl < slots; sl++) {
            GenerationSession s = running[sl];
            if (s == null) continue;
            if (s.cancelled) {
                release(s, GenerationSession.FinishReason.CANCELLED);
                continue;
            }
            rowSession[nDecode++] = s;
        }
        prefill();
        if (nDecode > 0) decode(nDecode);
    }

    private void prefill() {
        int n = 0, rows = 0;
        synchronized (queue) {
            while (!queue.isEmpty() && n < slots) {
                GenerationSession s = queue.peek();
                if (s.cancelled) {
                    queue.poll();
                    s.finish(GenerationSession.FinishReason.CANCELLED);
                    continue;
                }
                int len = s.request.prompt().length;
                if (rows + len > prefillTokens && n > 0) break;
                int sl = freeSlot();
                if (sl < 0) break;
                queue.poll();
                s.slot = sl;
                running[sl] = s;
                slotOf[n] = sl;
                rows += len;
                n++;
            }
        }
        if (n == 0) return;
        // the sessions of this prefill, in slot order of admission
        GenerationSession[] joined = new GenerationSession[n];
        for (int i = 0; i < n; i++) joined[i] = running[slotOf[i]];
        // one forward per prompt, not one for all of them: the weight products of a packed prefill would have rows
        // from several prompts, and every GEMM backend rounds a row differently depending on how many rows share
        // the product (WeightGemm.streamAllRows), so a prompt's logits would depend on what it was admitted with
        for (int i = 0; i < n; i++) {
            GenerationSession s = joined[i];
            int[] p = s.request.prompt();
            long t0 = System.nanoTime();
            try {
                one[0] = s.slot;
                oneStarts[1] = p.length;
                runner.forward(p, oneStarts, ZERO, one, 1);
            } catch (RuntimeException e) {
                for (int j = i; j < n; j++) release(joined[j], e.getMessage());
                return;
            }
            prefillNanos += System.nanoTime() - t0;
            prefillRows += p.length;
            s.pos = p.length;
            int t = s.sampler.sample(runner.logits().segment(), 0, c.vocab());
            afterSample(s, t);
        }
    }

    /** One sequence's starts, first position and slot for a prefill forward. */
    private final int[] oneStarts = new int[2], one = new int[1];
    private static final int[] ZERO = {0};

    private void decode(int n) {
        for (int i = 0; i < n; i++) {
            GenerationSession s = rowSession[i];
            tok[i] = s.last;
            starts[i] = i;
            first[i] = s.pos;
            slotOf[i] = s.slot;
        }
        starts[n] = n;
        long t0 = System.nanoTime();
        try {
            runner.forward(tok, starts, first, slotOf, n);
        } catch (RuntimeException e) {
            for (int i = 0; i < n; i++) release(rowSession[i], e.getMessage());
            return;
        }
        decodeNanos += System.nanoTime() - t0;
        decodeRows += n;
        decodeSteps++;
        Tensor lg = runner.logits();
        for (int i = 0; i < n; i++) {
            GenerationSession s = rowSession[i];
            rowSession[i] = null;
            s.pos++;
            int t = s.sampler.sample(lg.segment(), (long) i * c.vocab(), c.vocab());
            afterSample(s, t);
        }
    }

    private void afterSample(GenerationSession s, int t) {
        s.last = t;
        boolean more;
        try {
            more = s.accept(t, eosId);
        } catch (RuntimeException e) {
            release(s, "listener failed: " + e);
            return;
        }
        if (!more) {
            release(s, (GenerationSession.FinishReason) null);
        } else if (s.pos + 1 > maxPositions) {
            release(s, GenerationSession.FinishReason.POSITIONS);
        }
    }

    private int freeSlot() {
        for (int i = 0; i < slots; i++) if (running[i] == null) return i;
        return -1;
    }

    private void release(GenerationSession s, GenerationSession.FinishReason r) {
        if (s.slot >= 0 && running[s.slot] == s) running[s.slot] = null;
        s.slot = -1;
        if (r != null) s.finish(r);
    }

    private void release(GenerationSession s, String error) {
        release(s, (GenerationSession.FinishReason) null);
        s.fail(error);
    }

    /** Prompt tokens prefilled so far, and the nanoseconds their forwards took. */
    public long prefillTokens() {
        return prefillRows;
    }

    public long prefillNanos() {
        return prefillNanos;
    }

    /** Tokens decoded so far (one per running session per step), steps, and nanoseconds. */
    public long decodeTokens() {
        return decodeRows;
    }

    public long decodeSteps() {
        return decodeSteps;
    }

    public long decodeNanos() {
        return decodeNanos;
    }

    @Override
    public void close() {
        synchronized (queue) {
            for (GenerationSession s : queue) s.finish(GenerationSession.FinishReason.CANCELLED);
            queue.clear();
        }
        for (GenerationSession s : running) if (s != null) s.finish(GenerationSession.FinishReason.CANCELLED);
        runner.close();
    }
}
