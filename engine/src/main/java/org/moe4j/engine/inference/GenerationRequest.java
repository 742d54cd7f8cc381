package org.moe4j.engine.inference;

import java.util.List;
import org.moe4j.Moe4jException;

/**
 * One generation: the prompt's token ids, at most {@code maxNewTokens} new tokens, how to sample them, whether an
 * EOS ends the text ({@code ignoreEos} goes on past it) and stop strings (the text ends before the first one).
 */
public record GenerationRequest(int[] prompt, int maxNewTokens, Sampling sampling, boolean ignoreEos,
                                List<String> stops) {
    public GenerationRequest {
        if (prompt == null || prompt.length == 0) throw new Moe4jException("generation: the prompt has no tokens");
        if (maxNewTokens < 0) throw new Moe4jException("--max-new-tokens " + maxNewTokens + ": must be >= 0");
        if (sampling == null) sampling = Sampling.ofGreedy();
        prompt = prompt.clone();
        stops = stops == null ? List.of() : List.copyOf(stops);
        for (String s : stops)
            if (s.isEmpty()) throw new Moe4jException("generation: a stop string must not be empty");
    }

    public static GenerationRequest greedy(int[] prompt, int maxNewTokens) {
        return new GenerationRequest(prompt, maxNewTokens, Sampling.ofGreedy(), false, List.of());
    }
}
