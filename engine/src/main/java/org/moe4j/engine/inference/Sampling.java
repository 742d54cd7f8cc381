package org.moe4j.engine.inference;

import org.moe4j.Moe4jException;

/**
 * How the next token is chosen: greedy (argmax, ties to the lower id), or sampled from softmax(logits / temperature)
 * restricted to the {@code topK} most likely tokens (0 = all) and then to the smallest set whose probability
 * reaches {@code topP} (1 = all), with a seeded random stream: the same seed gives the same text.
 */
public record Sampling(boolean greedy, double temperature, int topK, double topP, long seed) {
    public Sampling {
        if (!greedy) {
            if (!(temperature > 0) || Double.isInfinite(temperature))
                throw new Moe4jException("--temperature " + temperature + ": must be finite and > 0 (use --greedy for argmax)");
            if (topK < 0) throw new Moe4jException("--top-k " + topK + ": must be >= 0 (0 = no limit)");
            if (!(topP > 0 && topP <= 1)) throw new Moe4jException("--top-p " + topP + ": must be in (0, 1]");
        }
    }

    public static Sampling ofGreedy() {
        return new Sampling(true, 1, 0, 1, 0);
    }

    public static Sampling of(double temperature, int topK, double topP, long seed) {
        return new Sampling(false, temperature, topK, topP, seed);
    }
}
