package org.moe4j.engine.serve;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ThreadLocalRandom;
import org.moe4j.engine.inference.GenerationRequest;
import org.moe4j.engine.inference.Sampling;
import org.moe4j.io.tokenizer.BpeTokenizer;

/**
 * One {@code /v1/completions} or {@code /v1/chat/completions} body, read and checked against what the model and its
 * generator take: the prompt as token ids, the new-token budget, the sampling and the stop strings.
 *
 * <p>Chat messages become one prompt by a plain template: each message as {@code "role: content\n"}, then
 * {@code "assistant: "} (the model continues the assistant's turn).
 */
public record CompletionRequest(int[] prompt, int maxTokens, Sampling sampling, List<String> stops, boolean stream) {
    /** OpenAI's default budget for /v1/completions. */
    static final int DEFAULT_MAX_TOKENS = 16;

    /** What the served generator takes: the vocabulary, prompt tokens per request and positions per sequence. */
    public record Limits(int vocab, int maxPromptTokens, int maxPositions) {
    }

    public GenerationRequest toGeneration() {
        return new GenerationRequest(prompt, maxTokens, sampling, false, stops);
    }

    /** Reads a request body; every refusal is an {@link ApiError} naming the field. */
    public static CompletionRequest parse(JsonNode body, boolean chat, Limits limits, BpeTokenizer tokenizer) {
        if (body == null || !body.isObject())
            throw ApiError.invalid(null, "the request body must be a JSON object");
        int[] prompt = chat ? chatPrompt(body.get("messages"), tokenizer) : prompt(body.get("prompt"), tokenizer);
        if (prompt.length == 0) throw ApiError.invalid(chat ? "messages" : "prompt", "the prompt has no tokens");
        for (int i = 0; i < prompt.length; i++)
            if (prompt[i] < 0 || prompt[i] >= limits.vocab())
                throw ApiError.invalid("prompt", "prompt token " + prompt[i] + " at position " + i
                        + " is outside the vocabulary [0, " + limits.vocab() + ")");
        if (prompt.length > limits.maxPromptTokens())
            throw new ApiError(400, "the prompt has " + prompt.length + " tokens; this server takes at most "
                    + limits.maxPromptTokens() + " (max positions " + limits.maxPositions() + ")",
                    "invalid_request_error", chat ? "messages" : "prompt", "context_length_exceeded");
        int n = integer(body, "n", 1);
        if (n != 1) throw ApiError.invalid("n", "n = " + n + ": this server returns one choice per request (n = 1)");
        String maxField = chat && body.hasNonNull("max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
        int maxTokens = integer(body, maxField, DEFAULT_MAX_TOKENS);
        if (maxTokens < 0) throw ApiError.invalid(maxField, maxField + " = " + maxTokens + ": must be >= 0");
        if (maxTokens > limits.maxPositions() - 1)
            throw ApiError.invalid(maxField, maxField + " = " + maxTokens + " is beyond the model's positions: at most "
                    + (limits.maxPositions() - 1) + " new tokens fit a sequence of " + limits.maxPositions());
        double temperature = number(body, "temperature", 1.0);
        if (!(temperature >= 0) || Double.isInfinite(temperature))
            throw ApiError.invalid("temperature", "temperature = " + temperature + ": must be finite and >= 0 (0 = greedy)");
        double topP = number(body, "top_p", 1.0);
        if (!(topP > 0 && topP <= 1)) throw ApiError.invalid("top_p", "top_p = " + topP + ": must be in (0, 1]");
        int topK = integer(body, "top_k", 0);
        if (topK < 0) throw ApiError.invalid("top_k", "top_k = " + topK + ": must be >= 0 (0 = no limit)");
        long seed;
        JsonNode s = body.get("seed");
        if (s == null || s.isNull()) seed = ThreadLocalRandom.current().nextLong();
        else if (s.canConvertToLong() && s.isIntegralNumber()) seed = s.longValue();
        else throw ApiError.invalid("seed", "seed must be an integer, got " + s);
        Sampling sampling = temperature == 0 ? Sampling.ofGreedy() : Sampling.of(temperature, topK, topP, seed);
        List<String> stops = stops(body.get("stop"));
        JsonNode st = body.get("stream");
        if (st != null && !st.isNull() && !st.isBoolean())
            throw ApiError.invalid("stream", "stream must be true or false, got " + st);
        return new CompletionRequest(prompt, maxTokens, sampling, stops, st != null && st.asBoolean(false));
    }

    private static int[] prompt(JsonNode p, BpeTokenizer tokenizer) {
        if (p == null || p.isNull()) throw ApiError.invalid("prompt", "'prompt' is missing (a string or an array of token ids)");
        if (p.isTextual()) return encode(p.textValue(), tokenizer, "prompt");
        if (p.isArray()) {
            if (p.size() == 1 && p.get(0).isTextual()) return encode(p.get(0).textValue(), tokenizer, "prompt");
            int[] ids = new int[p.size()];
            for (int i = 0; i < ids.length; i++) {
                JsonNode e = p.get(i);
                if (!e.isIntegralNumber() || !e.canConvertToInt())
                    throw ApiError.invalid("prompt", "prompt[" + i + "] = " + e + ": an array prompt must hold token ids "
                            + "(integers), or one string");
                ids[i] = e.intValue();
            }
            return ids;
        }
        throw ApiError.invalid("prompt", "'prompt' must be a string or an array of token ids, got " + p.getNodeType());
    }

    private static int[] chatPrompt(JsonNode messages, BpeTokenizer tokenizer) {
        if (messages == null || !messages.isArray() || messages.isEmpty())
            throw ApiError.invalid("messages", "'messages' must be a non-empty array of {role, content}");
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < messages.size(); i++) {
            JsonNode m = messages.get(i);
            JsonNode role = m.get("role"), content = m.get("content");
            if (role == null || !role.isTextual() || content == null || !content.isTextual())
                throw ApiError.invalid("messages", "messages[" + i + "] must have a string 'role' and a string 'content'");
            sb.append(role.textValue()).append(": ").append(content.textValue()).append('\n');
        }
        sb.append("assistant: ");
        return encode(sb.toString(), tokenizer, "messages");
    }

    private static int[] encode(String text, BpeTokenizer tokenizer, String param) {
        if (tokenizer == null)
            throw ApiError.invalid(param, "the checkpoint has no tokenizer.json: only prompts of token ids work "
                    + "(\"prompt\": [1, 2, 3])");
        return tokenizer.encode(text);
    }

    private static List<String> stops(JsonNode s) {
        List<String> out = new ArrayList<>();
        if (s == null || s.isNull()) return out;
        if (s.isTextual()) {
            out.add(s.textValue());
        } else if (s.isArray()) {
            for (JsonNode e : s) {
                if (!e.isTextual()) throw ApiError.invalid("stop", "stop entries must be strings, got " + e);
                out.add(e.textValue());
            }
        } else {
            throw ApiError.invalid("stop", "'stop' must be a string or an array of strings");
        }
        for (String e : out) if (e.isEmpty()) throw ApiError.invalid("stop", "a stop string must not be empty");
        return out;
    }

    private static int integer(JsonNode body, String field, int dflt) {
        JsonNode v = body.get(field);
        if (v == null || v.isNull()) return dflt;
        if (!v.isIntegralNumber() || !v.canConvertToInt())
            throw ApiError.invalid(field, field + " must be an integer, got " + v);
        return v.intValue();
    }

    private static double number(JsonNode body, String field, double dflt) {
        JsonNode v = body.get(field);
        if (v == null || v.isNull()) return dflt;
        if (!v.isNumber()) throw ApiError.invalid(field, field + " must be a number, got " + v);
        return v.doubleValue();
    }
}
