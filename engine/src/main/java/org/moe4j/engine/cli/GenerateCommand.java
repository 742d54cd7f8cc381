package org.moe4j.engine.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.inference.GenerationRequest;
import org.moe4j.engine.inference.GenerationSession;
import org.moe4j.engine.inference.Generator;
import org.moe4j.engine.inference.InferenceModel;
import org.moe4j.engine.inference.Sampling;
import org.moe4j.engine.inference.TokenListener;
import org.moe4j.engine.numerics.NumericsInputs;
import org.moe4j.engine.routing.ExpertSet;
import org.moe4j.engine.subset.OutputFolders;
import org.moe4j.nativ.GemmBackends;
import org.moe4j.simd.WorkerPool;
import picocli.CommandLine.ArgGroup;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code ./moe4j generate}: text (or token ids) from a checkpoint, streamed as it is produced. */
@Command(name = "generate", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Generates a continuation of a prompt (or of several prompts, decoded together as one batch) "
                + "from a checkpoint, with KV caching, elastic k, expert subsets and EMO evaluation pools.",
                "Streams the text of a single prompt as it is produced, then prints prefill and decode tokens/s."})
public final class GenerateCommand implements Callable<Integer> {
    private static final ObjectMapper JSON = new ObjectMapper();

    @Option(names = "--ckpt", required = true, paramLabel = "DIR",
            description = "checkpoint folder (config.json + safetensors, tokenizer.json for text)")
    Path ckpt;

    static final class PromptSource {
        @Option(names = "--prompt", paramLabel = "TEXT", description = "the prompt text (needs the checkpoint's tokenizer.json)")
        String text;

        @Option(names = "--prompt-tokens", paramLabel = "FILE.json",
                description = "{\"tokens\": [[ids...], ...]} (numerics' format): one prompt per sequence, generated as a batch")
        Path tokens;
    }

    @ArgGroup(exclusive = true, multiplicity = "1")
    PromptSource prompt;

    @Option(names = "--max-new-tokens", defaultValue = "64", paramLabel = "N", description = "new tokens at most (default: ${DEFAULT-VALUE})")
    int maxNew;

    @Option(names = "--greedy", description = "argmax decoding (the default when no --temperature is given)")
    boolean greedy;

    @Option(names = "--temperature", paramLabel = "T", description = "sample from softmax(logits / T)")
    Double temperature;

    @Option(names = "--top-k", defaultValue = "0", paramLabel = "K", description = "sample among the K most likely tokens (0 = all)")
    int topK;

    @Option(names = "--top-p", defaultValue = "1.0", paramLabel = "P", description = "nucleus: the smallest set of probability >= P (1 = all)")
    double topP;

    @Option(names = "--seed", defaultValue = "0", paramLabel = "S", description = "sampling seed: the same seed gives the same text (default: ${DEFAULT-VALUE})")
    long seed;

    @Option(names = "--ignore-eos", description = "go on past an end-of-text token")
    boolean ignoreEos;

    @Option(names = "--stop", paramLabel = "TEXT", description = "stop before this text (repeatable)")
    List<String> stops = new ArrayList<>();

    @Option(names = "--k-per-layer", paramLabel = "K,K,...", description = "routed k' per layer (elastic k), or one for all; shared experts not counted")
    String kPerLayer;

    @Option(names = "--subset", paramLabel = "FILE.json",
            description = "keep only these experts: {\"experts\": [ids]} or {\"layers\": [[ids] per layer]}; every shared expert must be listed")
    Path subset;

    @Option(names = "--emo-pool", defaultValue = "auto", paramLabel = "auto|off|P",
            description = "EMO evaluation pool frozen from the prompt (auto: the checkpoint's, when it is an EMO model; default: ${DEFAULT-VALUE})")
    String emoPool;

    @Option(names = "--weights-dtype", defaultValue = "f32", paramLabel = "f32|bf16", description = "matrix precision (default: ${DEFAULT-VALUE})")
    String dtype;

    @Option(names = "--kv-dtype", defaultValue = "f32", paramLabel = "f32|bf16",
            description = "KV-cache precision: bf16 halves its memory and what a decode step reads from it (default: ${DEFAULT-VALUE})")
    String kvDtype;

    @Option(names = "--gemm", paramLabel = "auto|java|onednn", description = "GEMM backend for prompt rows (default: as train)")
    String gemm;

    @Option(names = "--out", paramLabel = "OUT.json", description = "write {\"tokens\": [[new ids] per prompt], \"text\": [...]}")
    Path out;

    @Override
    public Integer call() {
        boolean bf16 = isBf16("--weights-dtype", dtype), kvBf16 = isBf16("--kv-dtype", kvDtype);
        if (out != null) requireOwnOutput(out);
        if (greedy && temperature != null) throw new Moe4jException("--greedy and --temperature exclude each other");
        Sampling sampling = temperature == null ? Sampling.ofGreedy() : Sampling.of(temperature, topK, topP, seed);
        WorkerPool pool = WorkerPool.common();
        try (InferenceModel model = InferenceModel.load(ckpt, bf16)) {
            ModelConfig c = model.config();
            List<int[]> prompts = new ArrayList<>();
            if (prompt.text != null) {
                if (model.tokenizer() == null)
                    throw new Moe4jException(ckpt + ": no tokenizer.json, so --prompt TEXT cannot be encoded; give --prompt-tokens");
                int[] ids = model.tokenizer().encode(prompt.text);
                if (ids.length == 0) throw new Moe4jException("--prompt: the text encodes to no tokens");
                prompts.add(ids);
            } else {
                for (int[] p : NumericsInputs.readTokens(prompt.tokens, c.vocab(), c.eosId()).sequences()) prompts.add(p);
            }
            int[] kpl = kPerLayer == null ? null : NumericsInputs.parseKPerLayer(kPerLayer, c.layers(), c.routedExperts());
            ExpertSet[] sets = null;
            if (subset != null) {
                int[][] ids = NumericsInputs.readSubset(subset, c);
                sets = new ExpertSet[c.layers()];
                for (int l = 0; l < c.layers(); l++) sets[l] = ExpertSet.of(c.experts(l), ids[l]);
            }
            int poolSize = switch (emoPool) {
                case "auto" -> -1;
                case "off" -> 0;
                default -> {
                    try {
                        int p = Integer.parseInt(emoPool);
                        if (p < 1 || p > c.routedExperts()) throw new NumberFormatException();
                        yield p;
                    } catch (NumberFormatException e) {
                        throw new Moe4jException("--emo-pool " + emoPool + ": expected auto, off or a pool size in 1.." + c.routedExperts());
                    }
                }
            };
            int longest = prompts.stream().mapToInt(p -> p.length).max().orElse(1);
            int positions = Math.min(c.maxSeq(), longest + Math.max(1, maxNew));
            GemmBackends.Choice backend = gemm == null ? GemmBackends.fromEnvironment(pool) : GemmBackends.select(gemm, pool);
            Generator.Options opts = new Generator.Options(prompts.size(), positions, Math.max(longest, prompts.size()),
                    kpl, sets, poolSize, kvBf16, backend.gemm(), pool);
            PrintStream con = System.out;
            boolean stream = prompts.size() == 1;
            System.err.println("moe4j generate: " + model + ", " + prompts.size() + " prompt" + (prompts.size() == 1 ? "" : "s")
                    + ", " + (sampling.greedy() ? "greedy" : "temperature " + temperature + ", top-k " + topK + ", top-p " + topP
                    + ", seed " + seed) + (kpl == null ? "" : ", k' " + kPerLayer) + (subset == null ? "" : ", subset " + subset));
            List<GenerationSession> sessions;
            try (Generator g = model.generator(opts)) {
                TokenListener l = stream ? (s, id, text) -> {
                    con.print(text);
                    con.flush();
                } : null;
                List<GenerationRequest> reqs = new ArrayList<>();
                for (int[] p : prompts) reqs.add(new GenerationRequest(p, maxNew, sampling, ignoreEos, stops));
                if (stream && model.tokenizer() != null && prompt.text != null) con.print(prompt.text);
                sessions = g.generate(reqs, l);
                if (stream) con.println();
                for (GenerationSession s : sessions)
                    if (s.finishReason() == GenerationSession.FinishReason.ERROR) throw new Moe4jException("generation failed: " + s.error());
                if (!stream) {
                    for (int i = 0; i < sessions.size(); i++)
                        con.println("[" + i + "] " + (model.tokenizer() == null ? java.util.Arrays.toString(sessions.get(i).tokens())
                                : sessions.get(i).text()));
                }
                double pre = g.prefillNanos() / 1e9, dec = g.decodeNanos() / 1e9;
                System.err.printf("prefill %,d tokens in %.3f s (%,.0f tokens/s); decode %,d tokens in %d steps, %.3f s "
                                + "(%,.1f tokens/s); time to first token %.1f ms%n", g.prefillTokens(), pre,
                        g.prefillTokens() / Math.max(pre, 1e-9), g.decodeTokens(), g.decodeSteps(), dec,
                        g.decodeTokens() / Math.max(dec, 1e-9), sessions.get(0).timeToFirstTokenNanos() / 1e6);
            }
            if (out != null) writeOut(sessions, model.tokenizer() != null);
        }
        return 0;
    }

    /** --out may replace nothing but an earlier output of this command (its three keys): never a user's file. */
    static void requireOwnOutput(Path out) {
        OutputFolders.requireOwnFile(out, "--out", "generate",
                f -> OutputFolders.jsonObjectWith(f, true, "tokens", "text", "finish_reason"));
    }

    private void writeOut(List<GenerationSession> sessions, boolean text) {
        ObjectNode root = JSON.createObjectNode();
        ArrayNode toks = root.putArray("tokens"), texts = root.putArray("text"), reasons = root.putArray("finish_reason");
        for (GenerationSession s : sessions) {
            ArrayNode a = toks.addArray();
            for (int t : s.tokens()) a.add(t);
            if (text) texts.add(s.text());
            else texts.addNull();
            reasons.add(s.finishReason().name().toLowerCase(java.util.Locale.ROOT));
        }
        try {
            OutputFolders.writeAtomically(out, JSON.writerWithDefaultPrettyPrinter().writeValueAsBytes(root), "--out");
        } catch (IOException e) {
            throw new Moe4jException("--out " + out + ": cannot serialise the output JSON: " + e.getMessage(), e);
        }
    }

    /** An option naming a precision: true for bf16, false for f32 (any case); anything else is refused, naming it. */
    static boolean isBf16(String option, String value) {
        return switch (value.toLowerCase(java.util.Locale.ROOT)) {
            case "f32" -> false;
            case "bf16" -> true;
            default -> throw new Moe4jException(option + " " + value + ": expected f32 or bf16");
        };
    }
}
