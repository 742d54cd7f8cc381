package org.moe4j.engine.inference;

import java.util.Arrays;
import java.util.concurrent.CountDownLatch;
import org.moe4j.Moe4jException;
import org.moe4j.io.tokenizer.BpeTokenizer;

/**
 * One sequence being generated: its request, its KV-cache slot while it runs, the tokens and text produced so far,
 * and timings. Created by {@link Generator#submit}; the caller can wait for it ({@link #await()}) or read it as it
 * streams through its {@link TokenListener}.
 */
public final class GenerationSession {
    /** Why generation ended. */
    public enum FinishReason { EOS, LENGTH, STOP, POSITIONS, CANCELLED, ERROR }

    final GenerationRequest request;
    final TokenListener listener;
    final Sampler sampler;
    private final BpeTokenizer tokenizer;
    final long id;
    int slot = -1;
    /** Position of the next token to feed (= tokens in the cache). */
    int pos;
    /** The token sampled last, fed at the next decode step. */
    int last;
    private int[] generated;
    private int count;
    private String text = "";
    private int emitted;
    private volatile FinishReason finish;
    private volatile String error;
    volatile boolean cancelled;
    private final CountDownLatch done = new CountDownLatch(1);
    long submittedNanos, firstTokenNanos, doneNanos;

    GenerationSession(long id, GenerationRequest request, TokenListener listener, BpeTokenizer tokenizer, int vocab) {
        this.id = id;
        this.request = request;
        this.listener = listener == null ? TokenListener.NONE : listener;
        this.tokenizer = tokenizer;
        this.sampler = new Sampler(request.sampling(), vocab);
        // sized for the whole budget up front: decoding never grows it (no allocation per token)
        this.generated = new int[Math.max(1, Math.min(request.maxNewTokens(), 1 << 20))];
        this.submittedNanos = System.nanoTime();
    }

    public long id() {
        return id;
    }

    public GenerationRequest request() {
        return request;
    }

    /** The new token ids so far (a copy). */
    public synchronized int[] tokens() {
        return Arrays.copyOf(generated, count);
    }

    public synchronized int tokenCount() {
        return count;
    }

    /** The text of the new tokens so far (empty without a tokenizer), cut before a stop string. */
    public synchronized String text() {
        return text;
    }

    public boolean done() {
        return finish != null;
    }

    public FinishReason finishReason() {
        return finish;
    }

    /** The error message when {@link #finishReason()} is ERROR. */
    public String error() {
        return error;
    }

    /** Asks the generator to end this session at its next step. */
    public void cancel() {
        cancelled = true;
    }

    /** Waits until the session ends; returns it. */
    public GenerationSession await() {
        try {
            done.await();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new Moe4jException("generation: interrupted while waiting for session " + id, e);
        }
        return this;
    }

    /** Nanoseconds from submission to the first new token (prefill included), or -1. */
    public long timeToFirstTokenNanos() {
        return firstTokenNanos == 0 ? -1 : firstTokenNanos - submittedNanos;
    }

    /**
     * Records a sampled token: returns false when it ends the session (EOS, a stop string, the token budget).
     * Text is decoded only when a tokenizer is present.
     */
    boolean accept(int token, int eosId) {
        if (firstTokenNanos == 0) firstTokenNanos = System.nanoTime();
        if (token == eosId && !request.ignoreEos()) {
            finish(FinishReason.EOS);
            return false;
        }
        String delta = "";
        boolean stop = false;
        synchronized (this) {
            if (count == generated.length) generated = Arrays.copyOf(generated, count * 2);
            generated[count++] = token;
            if (tokenizer != null) {
                String full = tokenizer.decode(Arrays.copyOf(generated, count));
                int end = full.length();
                // hold back an incomplete UTF-8 sequence (decoded as U+FFFD) until its next bytes arrive
                while (end > emitted && full.charAt(end - 1) == '\uFFFD') end--;
                for (String s : request.stops()) {
                    int at = full.indexOf(s, Math.max(0, emitted - s.length() + 1));
                    if (at >= 0 && at < end) {
                        end = at;
                        stop = true;
                    }
                }
                if (!stop) { // hold back a tail that may be the start of a stop string
                    for (String s : request.stops()) {
                        for (int len = Math.min(s.length() - 1, end - emitted); len > 0; len--) {
                            if (full.regionMatches(end - len, s, 0, len)) {
                                end -= len;
                                break;
                            }
                        }
                    }
                }
                if (end > emitted) {
                    delta = full.substring(emitted, end);
                    emitted = end;
                }
                text = full.substring(0, emitted);
            }
        }
        listener.onToken(this, token, delta);
        if (stop) {
            finish(FinishReason.STOP);
            return false;
        }
        if (count >= request.maxNewTokens()) {
            finish(FinishReason.LENGTH);
            return false;
        }
        return true;
    }

    void fail(String message) {
        error = message;
        finish(FinishReason.ERROR);
    }

    void finish(FinishReason r) {
        if (finish != null) return;
        doneNanos = System.nanoTime();
        finish = r;
        try {
            listener.onDone(this);
        } finally {
            done.countDown();
        }
    }
}
