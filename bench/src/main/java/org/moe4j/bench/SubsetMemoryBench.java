package org.moe4j.bench;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;
import org.moe4j.engine.config.LossWeights;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.config.RoutingConfig;
import org.moe4j.engine.inference.GenerationRequest;
import org.moe4j.engine.inference.Generator;
import org.moe4j.engine.inference.InferenceModel;
import org.moe4j.engine.inference.Sampling;
import org.moe4j.engine.io.ModelCheckpoint;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.ParamLayout;
import org.moe4j.engine.numerics.NumericsInputs;
import org.moe4j.engine.routing.ExpertSet;
import org.moe4j.engine.subset.Pruner;
import org.moe4j.nativ.GemmBackends;
import org.moe4j.simd.WorkerPool;

/**
 * Hypothesis: resident memory shrinks with the experts kept. A random model is written once as a full checkpoint and,
 * for K = E, E/2, E/4, E/8, as a pruned checkpoint of a random K-subset; each configuration — full checkpoint + the
 * subset as a router mask, and pruned checkpoint — runs in a fresh JVM (so RSS is not polluted by the previous one)
 * that maps the weights in place, reads VmRSS/RssFile from /proc/self/status before loading, after loading and after
 * generating 64 tokens, and the resident bytes of the mapped weights file (the Rss of its mappings in
 * /proc/self/smaps), and times the decode. The table sets the weights' resident bytes beside what K/E predicts: the
 * non-expert weights plus K/E of the expert weights. A masked full checkpoint only touches its kept experts' pages,
 * so both kinds should follow K/E. The rest of RSS (JIT, heap, activation buffers, KV cache) does not depend on K.
 * The child uses the Java GEMM, so no native library adds mapped pages.
 *
 * <p>Run: {@code ./moe4j bench-main SubsetMemoryBench [--experts 32] [--d 256] [--hidden 256] [--layers 4]
 * [--vocab 4096] [--tokens 64] [--dir DIR]}. Linux only (/proc).
 */
public final class SubsetMemoryBench {
    private SubsetMemoryBench() {
    }

    public static void main(String[] args) throws Exception {
        if (args.length > 0 && args[0].equals("--child")) {
            child(Path.of(args[1]), args[2].equals("-") ? null : Path.of(args[2]), Integer.parseInt(args[3]));
            return;
        }
        int experts = 32, d = 256, hidden = 256, layers = 4, vocab = 4096, tokens = 64;
        Path dir = null;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--experts" -> experts = Integer.parseInt(args[++i]);
                case "--d" -> d = Integer.parseInt(args[++i]);
                case "--hidden" -> hidden = Integer.parseInt(args[++i]);
                case "--layers" -> layers = Integer.parseInt(args[++i]);
                case "--vocab" -> vocab = Integer.parseInt(args[++i]);
                case "--tokens" -> tokens = Integer.parseInt(args[++i]);
                case "--dir" -> dir = Path.of(args[++i]);
                default -> throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        boolean temp = dir == null;
        if (temp) dir = Files.createTempDirectory("moe4j-subset-mem");
        ModelConfig c = new ModelConfig(vocab, d, layers, Math.max(1, d / 64), Math.max(1, d / 64), experts, 0, 4, hidden,
                10000.0, false, 1e-6, 256, 0, RoutingConfig.standard(), LossWeights.defaults());
        long expertBytes = 0, allBytes = new ParamLayout(c).total() * 4;
        for (ParamLayout.Entry e : new ParamLayout(c).entries())
            if (e.name().contains(".mlp.experts.")) expertBytes += e.numel() * 4;
        long nonExpert = allBytes - expertBytes;
        Path full = dir.resolve("full");
        System.out.printf(Locale.ROOT, "model: E %d, k %d, d %d, h %d, %d layers, vocab %d: %.1f MB of weights, %.1f MB in "
                        + "experts (F32); JDK %s; %d new tokens per run%n", experts, c.k(), d, hidden, layers, vocab,
                allBytes / 1e6, expertBytes / 1e6, Runtime.version(), tokens);
        List<String> lines = new ArrayList<>();
        try (MoeModel m = new MoeModel(c, false).initRandom(1)) {
            ModelCheckpoint.save(full, m, null, null);
            SplittableRandom r = new SplittableRandom(7);
            for (int keep = experts; keep >= Math.max(1, experts / 8); keep /= 2) {
                int[][] kept = new int[layers][];
                for (int l = 0; l < layers; l++) kept[l] = r.ints(0, experts).distinct().limit(keep).sorted().toArray();
                Path subset = dir.resolve("subset-" + keep + ".json"), pruned = dir.resolve("pruned-" + keep);
                StringBuilder js = new StringBuilder("{\"layers\": [");
                for (int l = 0; l < layers; l++) js.append(l == 0 ? "" : ", ").append(java.util.Arrays.toString(kept[l]));
                Files.writeString(subset, js.append("]}").toString());
                try (MoeModel p = Pruner.prune(m, kept, false)) {
                    Pruner.write(pruned, p, null, Pruner.metadata(null, full, "random", null, kept));
                }
                double predicted = nonExpert + (double) keep / experts * expertBytes;
                lines.add(row(keep, experts, "full + mask", run(full, subset, tokens), predicted));
                lines.add(row(keep, experts, "pruned", run(pruned, null, tokens), predicted));
            }
        }
        System.out.println("| K | checkpoint | weights mapped | weights resident after load | after generate "
                + "| predicted (non-expert + K/E·experts) | resident / predicted | VmRSS before load | VmRSS after generate "
                + "| decode tokens/s |");
        System.out.println("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        lines.forEach(System.out::println);
        if (temp) deleteTree(dir);
    }

    record Measure(long before, long gen, long mapped, long residentLoad, long residentGen, double tokensPerSecond) {
    }

    static String row(int keep, int experts, String what, Measure m, double predicted) {
        return String.format(Locale.ROOT, "| %d/%d | %s | %.1f MB | %.1f MB | %.1f MB | %.1f MB | %.3f | %.1f MB | %.1f MB | %.1f |",
                keep, experts, what, m.mapped() / 1e6, m.residentLoad() / 1e6, m.residentGen() / 1e6, predicted / 1e6,
                m.residentGen() / predicted, m.before() / 1e6, m.gen() / 1e6, m.tokensPerSecond());
    }

    /** Runs one configuration in a fresh JVM with the flags of this one; parses its RESULT line. */
    static Measure run(Path ckpt, Path subset, int tokens) throws IOException, InterruptedException {
        String java = ProcessHandle.current().info().command().orElse("java");
        List<String> cmd = new ArrayList<>(List.of(java, "--add-modules", "jdk.incubator.vector",
                "--enable-native-access=ALL-UNNAMED", "-XX:+UseParallelGC", "-Xmx256m", "-cp",
                System.getProperty("java.class.path"), SubsetMemoryBench.class.getName(), "--child", ckpt.toString(),
                subset == null ? "-" : subset.toString(), Integer.toString(tokens)));
        Process p = new ProcessBuilder(cmd).redirectError(ProcessBuilder.Redirect.DISCARD).start();
        String result = null;
        try (BufferedReader in = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8))) {
            for (String line; (line = in.readLine()) != null; ) if (line.startsWith("RESULT ")) result = line;
        }
        int code = p.waitFor();
        if (code != 0 || result == null) throw new IllegalStateException("child for " + ckpt + " exited " + code);
        String[] f = result.split(" ");
        return new Measure(Long.parseLong(f[1]), Long.parseLong(f[2]), Long.parseLong(f[3]), Long.parseLong(f[4]),
                Long.parseLong(f[5]), Double.parseDouble(f[6]));
    }

    /** The child: load in place, generate greedily, print RESULT rssBefore rssGen mapped residentLoad residentGen tokens/s. */
    static void child(Path ckpt, Path subset, int tokens) {
        long before = status("VmRSS");
        WorkerPool pool = WorkerPool.common();
        Path weights = ckpt.resolve("model.safetensors").toAbsolutePath();
        try (InferenceModel m = InferenceModel.load(ckpt, false)) {
            if (!m.zeroCopy()) throw new IllegalStateException(ckpt + " was not mapped in place");
            long[] load = mapped(weights);
            ModelConfig c = m.config();
            ExpertSet[] masks = null;
            if (subset != null) {
                int[][] ids = NumericsInputs.readSubset(subset, c.layers(), c.experts(), c.sharedExperts());
                masks = new ExpertSet[c.layers()];
                for (int l = 0; l < c.layers(); l++) masks[l] = ExpertSet.of(c.experts(), ids[l]);
            }
            int[] prompt = {0, 11, 12, 13, 14, 15, 16, 17};
            Generator.Options o = Generator.Options.defaults(GemmBackends.select("java", pool).gemm(), pool).withSlots(1)
                    .withPositions(prompt.length + tokens).withRouting(null, masks);
            try (Generator g = m.generator(o)) {
                g.generate(List.of(new GenerationRequest(prompt, tokens, Sampling.ofGreedy(), true, List.of())), null);
                long gen = status("VmRSS");
                long[] after = mapped(weights);
                System.out.println("RESULT " + before + " " + gen + " " + after[0] + " " + load[1] + " " + after[1] + " "
                        + g.decodeTokens() / Math.max(1e-9, g.decodeNanos() / 1e9));
            }
        }
    }

    /** {mapped bytes, resident bytes} of this process's mappings of {@code file}, from /proc/self/smaps. */
    static long[] mapped(Path file) {
        long size = 0, rss = 0;
        boolean in = false;
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/smaps"))) {
                if (!line.isEmpty() && Character.isLetterOrDigit(line.charAt(0)) && line.indexOf(' ') > 0
                        && line.substring(0, line.indexOf(' ')).contains("-")) {
                    in = line.endsWith(" " + file) || line.endsWith("\t" + file);
                    continue;
                }
                if (!in) continue;
                if (line.startsWith("Size:")) size += kb(line);
                else if (line.startsWith("Rss:")) rss += kb(line);
            }
        } catch (IOException e) {
            throw new IllegalStateException("/proc/self/smaps: " + e.getMessage(), e);
        }
        if (size == 0) throw new IllegalStateException(file + " is not mapped by this process");
        return new long[] {size, rss};
    }

    private static long kb(String line) {
        String v = line.substring(line.indexOf(':') + 1).trim();
        return Long.parseLong(v.substring(0, v.indexOf(' '))) * 1024;
    }

    /** A field of /proc/self/status in bytes (the file gives kB). */
    static long status(String field) {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (line.startsWith(field + ":")) {
                    String v = line.substring(field.length() + 1).trim();
                    return Long.parseLong(v.substring(0, v.indexOf(' '))) * 1024;
                }
            }
        } catch (IOException e) {
            throw new IllegalStateException("/proc/self/status: " + e.getMessage(), e);
        }
        throw new IllegalStateException("/proc/self/status has no " + field + " (Linux only)");
    }

    static void deleteTree(Path root) throws IOException {
        try (var s = Files.walk(root)) {
            for (Path p : s.sorted(java.util.Comparator.reverseOrder()).toList()) Files.deleteIfExists(p);
        }
    }
}
