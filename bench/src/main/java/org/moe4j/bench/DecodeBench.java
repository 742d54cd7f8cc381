package org.moe4j.bench;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.management.ManagementFactory;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Random;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.inference.GenerationRequest;
import org.moe4j.engine.inference.GenerationSession;
import org.moe4j.engine.inference.Generator;
import org.moe4j.engine.inference.InferenceModel;
import org.moe4j.engine.inference.Sampling;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.routing.ExpertSet;
import org.moe4j.simd.Gemm;
import org.moe4j.simd.WorkerPool;

/**
 * Inference throughput of the {@link Generator} on random-init models, side by side with the two machine bounds
 * measured in the same process: the FP32 FMA peak (for prefill) and the streaming read bandwidth (for decode).
 *
 * <p>Per config, weight dtype (F32 / BF16) and expert set (all, or a random subset of the routed experts per layer
 * applied as a routing mask): prefill tokens/s of one prompt of N tokens, time to first token, decode tokens/s at
 * batch 1, 4, 16 (B sessions decoding together, tokens/s = B × steps / time of the decode steps, sampling and
 * scheduling included), heap bytes allocated per decoded token after warm-up (the stepping thread and the pool's
 * workers), and the batch-1 bound: weight bytes a decoded token reads ÷ measured read bandwidth.
 *
 * <p>Weight bytes per decoded token at batch 1, counted from the config: per layer the attention projections and the
 * k experts' [W1;W3] and W2 in the matrices' dtype, the router and norm weights in F32 (they stay F32 in BF16
 * models), plus the LM head (dtype), the final norm and one embedding row; plus the KV cache a decode step reads:
 * 2 × kvHeads × headSize × 4 bytes (F32 cache) per cached position per layer, at the mean cache length of the timed
 * steps (prompt + new / 2 positions). At a 512-token prompt that is 9.4 MB per token in the bench config: 11% of the
 * F32 weights' bytes and 22% of the BF16 weights' (the "KV MB" column), so it is part of the bound. With a subset the
 * per-token bytes are the same; the subset only shrinks the working set (which may then sit in the L3 and beat the
 * DRAM bound). The "model MB" column is every weight a decode step may read (the kept experts, attention, routers,
 * LM head); a † marks rows where that fits in the last-level cache (read from sysfs; 300 MiB on the VM of
 * bench/RESULTS.md), whose decode is not DRAM-bound: a random-weight model routes most tokens to a few experts, and
 * even a bigger model keeps them in a cache that large, so only rows without † (and the E scan's large E) say how
 * close decode comes to the DRAM bound.
 *
 * <p>Prefill model FLOPs: per prompt token 2 × (attention projections + router + k experts) per layer plus causal
 * attention (2 × 2 × q width × (T + 1) / 2 per token per layer), plus the LM head once (only the last row's logits are
 * computed).
 *
 * <p>A second table, "cost per token flat in E": batch-1 decode tokens/s of the bench config (k 4, h 512) with
 * E = 16, 32, 64 experts.
 *
 * <p>Run: {@code ./moe4j bench-main DecodeBench [--configs bench,olmoe] [--dtypes f32,bf16] [--batches 1,4,16]
 * [--subset 1,0.25] [--kv f32,bf16] [--prompt 512] [--new 64] [--rounds 3] [--experts 16,32,64|none] [--warmup-s 0.5]
 * [--gemm auto|java|onednn]} (auto, the default, is what generate and serve use).
 */
public final class DecodeBench {
    private DecodeBench() {
    }

    /** 1 GiB: several times any L3 this runs on (the VM reports 300 MB), so the read comes from DRAM. */
    static final long STREAM_BYTES = 1L << 30;
    /** Warm-up per generator: rounds for at least this long (see {@link #run}). */
    static long WARMUP_NANOS = 500_000_000L;
    static final long MAX_WARMUP_NANOS = 30_000_000_000L;
    /** Warm-up ends once the JIT has compiled nothing for this long. */
    static final long QUIET_NANOS = 2_000_000_000L;
    /** Heap bytes per decoded token under which a warm-up round counts as compiled (the fallback allocates ~100 KB). */
    static final double WARM_HEAP_PER_TOKEN = 1024;

    public static void main(String[] args) {
        List<String> configs = List.of("bench", "olmoe");
        List<String> dtypes = List.of("f32", "bf16");
        List<String> kvTypes = List.of("f32");
        int[] batches = {1, 4, 16};
        double[] subsets = {1, 0.25};
        int[] eScan = {16, 32, 64};
        // a 512-token prompt (llama.cpp's pp512): about 64 rows per expert with E 32, k 4 — compute-bound products;
        // 128 gives ~16 rows each, which the weight-streaming kernel runs at the memory bound
        int prompt = 512, newTokens = 64, rounds = 3;
        // the engine's default (generate, serve): oneDNN for many rows when it loads, else Java
        String gemmName = "auto";
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (i + 1 >= args.length) throw new IllegalArgumentException(a + ": missing value");
            String v = args[++i];
            switch (a) {
                case "--configs" -> configs = List.of(v.split(","));
                case "--dtypes" -> dtypes = List.of(v.split(","));
                case "--kv" -> kvTypes = List.of(v.split(","));
                case "--batches" -> batches = Arrays.stream(v.split(",")).mapToInt(Integer::parseInt).toArray();
                case "--subset" -> subsets = Arrays.stream(v.split(",")).mapToDouble(Double::parseDouble).toArray();
                case "--experts" -> eScan = v.equals("none") ? new int[0]
                        : Arrays.stream(v.split(",")).mapToInt(Integer::parseInt).toArray();
                case "--prompt" -> prompt = Integer.parseInt(v);
                case "--new" -> newTokens = Integer.parseInt(v);
                case "--rounds" -> rounds = Integer.parseInt(v);
                case "--gemm" -> gemmName = v;
                case "--warmup-s" -> WARMUP_NANOS = (long) (Double.parseDouble(v) * 1e9);
                default -> throw new IllegalArgumentException("DecodeBench: unknown option " + a + " (expected --configs, "
                        + "--dtypes, --kv, --batches, --subset, --experts, --prompt, --new, --rounds, --warmup-s, --gemm)");
            }
        }
        for (String kv : kvTypes)
            if (!kv.equals("f32") && !kv.equals("bf16")) throw new IllegalArgumentException("--kv " + kv + ": expected f32 or bf16");
        if (rounds < 1) throw new IllegalArgumentException("--rounds " + rounds + ": need >= 1");
        if (newTokens < 2) throw new IllegalArgumentException("--new " + newTokens + ": need >= 2 (one decode step)");
        WorkerPool pool = WorkerPool.common();
        double peak0 = StepBench.fmaPeak(pool); // also warms the FMA kernel up for the per-row re-measurements
        var choice = org.moe4j.nativ.GemmBackends.select(gemmName, pool);
        Gemm gemm = choice.gemm();
        try (Bounds bounds = new Bounds(pool)) {
            double bw0 = bounds.bandwidth(4);
            System.out.printf(Locale.ROOT, "FP32 FMA peak, %d threads: %.1f GFLOP/s; streaming read, %d threads, %d MiB: "
                            + "%.2f GB/s (at the start; both are re-measured around every row) (JDK %s)%n", pool.threads(),
                    peak0, pool.threads(), STREAM_BYTES >> 20, bw0 / 1e9, Runtime.version());
            System.out.printf(Locale.ROOT, "GEMM %s (%s); prompt %d tokens, %d new tokens per session (greedy, EOS "
                            + "ignored); per generator, warm-up rounds (>= %.1f s, until a decode allocates < %.0f B/token or "
                            + "the JIT has been idle for %d s) then %d timed rounds%n", gemm.name(), choice.reason(), prompt, newTokens, WARMUP_NANOS * 1e-9,
                    WARM_HEAP_PER_TOKEN, QUIET_NANOS / 1_000_000_000L, rounds);
            for (String name : configs) System.out.println(name + ": " + describe(config(name, 32, prompt + newTokens)));
            long llc = lastLevelCacheBytes();
            System.out.println("last-level cache: " + (llc < 0 ? "size unknown" : (llc >> 20) + " MiB") + "; the bound is "
                    + "a DRAM bound only where a decode step's weights do not stay in it: \"model MB\" is every weight "
                    + "of the model, and a row marked † has them all fit in the cache, so its decode may beat the bound");

            StringBuilder head = new StringBuilder("| config | dtype | KV | experts | prefill tok/s | TTFT ms | prefill % peak |");
            StringBuilder rule = new StringBuilder("|---|---|---|---|---:|---:|---:|");
            for (int b : batches) {
                head.append(" decode B").append(b).append(" tok/s |");
                rule.append("---:|");
            }
            head.append(" model MB | MB/token (KV MB) | GB/s | B1 bound tok/s | B1 % of bound | peak GFLOP/s | heap B/token (")
                    .append(joined(batches)).append(") |");
            rule.append("---:|---:|---:|---:|---:|---:|---:|");
            System.out.println();
            System.out.println(head);
            System.out.println(rule);
            int b1 = indexOf(batches, 1);
            for (String name : configs) {
                ModelConfig c = config(name, 32, prompt + newTokens);
                try (MoeModel m = new MoeModel(c).initRandom(1)) {
                    for (String dt : dtypes) {
                        boolean bf16 = dt.equals("bf16");
                        try (InferenceModel im = InferenceModel.of(m, null, bf16)) {
                            for (String kvType : kvTypes) for (double f : subsets) {
                                boolean kvBf16 = kvType.equals("bf16");
                                ExpertSet[] sub = subset(c, f, 42);
                                int kept = sub == null ? c.routedExperts() : sub[0].size();
                                Result[] rs = new Result[batches.length];
                                double bwBefore = bounds.bandwidth(2), peakBefore = bounds.peak(2);
                                for (int bi = 0; bi < batches.length; bi++)
                                    rs[bi] = run(im, sub, batches[bi], prompt, newTokens, rounds, kvBf16, gemm, pool);
                                // the mean of the bounds measured just before and just after the row's runs
                                double bw = (bwBefore + bounds.bandwidth(2)) / 2, peak = (peakBefore + bounds.peak(2)) / 2;
                                Result p = rs[Math.max(b1, 0)]; // prefill of one prompt when batch 1 runs
                                double kv = kvBytes(c, prompt, newTokens, kvBf16), bytes = decodeBytes(c, bf16) + kv;
                                double bound = bw / bytes;
                                double prefillPct = 100 * p.prefillTokPerSec * prefillFlopsPerToken(c, prompt) / 1e9 / peak;
                                StringBuilder row = new StringBuilder();
                                row.append(String.format(Locale.ROOT, "| %s | %s | %s | %s | %,.0f | %.1f | %.1f%% |", name,
                                        dt.toUpperCase(Locale.ROOT), kvType.toUpperCase(Locale.ROOT), kept + "/" + c.routedExperts(), p.prefillTokPerSec,
                                        p.ttftMs, prefillPct));
                                for (Result r : rs)
                                    row.append(String.format(Locale.ROOT, " %,.1f%s |", r.decodeTokPerSec,
                                            r.warmCapped ? "*" : ""));
                                double model = modelBytes(c, bf16, kept);
                                String fits = llc > 0 && model <= llc ? " †" : "";
                                row.append(String.format(Locale.ROOT, " %.0f%s | %.1f (%.1f) | %.2f | %,.1f | %s | %.1f | %s |",
                                        model / 1e6, fits, bytes / 1e6, kv / 1e6, bw / 1e9, bound, b1 < 0 ? "-"
                                                : String.format(Locale.ROOT, "%.1f%%%s", 100 * rs[b1].decodeTokPerSec / bound, fits),
                                        peak, heapColumn(rs)));
                                System.out.println(row);
                            }
                        }
                    }
                }
            }

            System.out.println();
            System.out.println("† = every weight a decode step may read (model MB) fits in the last-level cache ("
                    + (llc < 0 ? "size unknown" : (llc >> 20) + " MiB") + "): not a DRAM-bound row.");
            System.out.println("* = warm-up reached its " + MAX_WARMUP_NANOS / 1_000_000_000L + " s cap with the decode "
                    + "not settled (kernels maybe not yet compiled by C2). GB/s and peak: re-measured before and "
                    + "after the row (mean); B1 bound = GB/s / MB per token.");
            if (eScan.length == 0) return;
            System.out.println();
            System.out.println("Cost per token flat in E: bench config (d 512, 4 layers, k 4, h 512), batch-1 decode, all experts");
            System.out.println();
            System.out.println("| E | dtype | params (M) | model MB | decode B1 tok/s | MB/token | GB/s | bound tok/s | % of bound | heap B/token |");
            System.out.println("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
            for (int e : eScan) {
                ModelConfig c = config("bench", e, prompt + newTokens);
                try (MoeModel m = new MoeModel(c).initRandom(1)) {
                    for (String dt : dtypes) {
                        boolean bf16 = dt.equals("bf16");
                        try (InferenceModel im = InferenceModel.of(m, null, bf16)) {
                            double bwBefore = bounds.bandwidth(2);
                            Result r = run(im, null, 1, prompt, newTokens, rounds, false, gemm, pool);
                            double bw = (bwBefore + bounds.bandwidth(2)) / 2;
                            double bytes = decodeBytes(c, bf16) + kvBytes(c, prompt, newTokens);
                            double model = modelBytes(c, bf16, c.routedExperts());
                            String fits = llc > 0 && model <= llc ? " †" : "";
                            System.out.printf(Locale.ROOT, "| %d | %s | %.1f | %.0f%s | %,.1f%s | %.1f | %.2f | %,.1f | %.1f%%%s | %,.1f |%n",
                                    e, dt.toUpperCase(Locale.ROOT), m.layout().total() / 1e6, model / 1e6, fits,
                                    r.decodeTokPerSec, r.warmCapped ? "*" : "", bytes / 1e6, bw / 1e9, bw / bytes,
                                    100 * r.decodeTokPerSec * bytes / bw, fits, r.heapPerToken);
                        }
                    }
                }
            }
        }
    }

    /**
     * bench = {@link ModelConfig#bench()} (V 8192, d 512, 4 layers, 8 heads, E 32, k 4, h 512); olmoe = OLMoE's
     * expert granularity at the same size: E 64, k 8, expert hidden d/2 = 256 (OLMoE-1B-7B: E 64, k 8, h 1024 at
     * d 2048), so the active and total expert parameters equal bench's and only the granularity differs. E overrides
     * bench's expert count (the E scan); maxSeq grows to fit prompt + new tokens.
     */
    static ModelConfig config(String name, int experts, int positions) {
        ModelConfig b = ModelConfig.bench();
        int e, k, h;
        switch (name) {
            case "bench" -> {
                e = experts;
                k = b.k();
                h = b.expertHidden();
            }
            case "olmoe" -> {
                e = 64;
                k = 8;
                h = b.d() / 2;
            }
            default -> throw new IllegalArgumentException("--configs: unknown config '" + name + "' (bench, olmoe)");
        }
        return new ModelConfig(b.vocab(), b.d(), b.layers(), b.heads(), b.kvHeads(), e, b.sharedExperts(), k, h,
                b.ropeTheta(), b.qkNorm(), b.normEps(), Math.max(b.maxSeq(), positions), b.eosId(), b.routing(), b.loss());
    }

    static String describe(ModelConfig c) {
        return String.format(Locale.ROOT, "V %d, d %d, %d layers, %d heads (%d kv), E %d (%d shared), k %d, h %d",
                c.vocab(), c.d(), c.layers(), c.heads(), c.kvHeads(), c.experts(), c.sharedExperts(), c.k(),
                c.expertHidden());
    }

    /** A seeded random {@code fraction} of the routed experts per layer (at least k'), plus every shared one; null for 1. */
    static ExpertSet[] subset(ModelConfig c, double fraction, long seed) {
        if (fraction >= 1) return null;
        int routed = c.routedExperts();
        int keep = Math.max(c.routedK(), (int) Math.round(routed * fraction));
        Random rnd = new Random(seed);
        ExpertSet[] s = new ExpertSet[c.layers()];
        for (int l = 0; l < c.layers(); l++) {
            List<Integer> ids = new ArrayList<>();
            for (int e = 0; e < routed; e++) ids.add(e);
            java.util.Collections.shuffle(ids, rnd);
            s[l] = new ExpertSet(c.experts());
            for (int i = 0; i < keep; i++) s[l].add(ids.get(i));
            s[l].addRange(routed, c.experts()); // shared experts are the last indices (ignored by the mask anyway)
        }
        return s;
    }

    /**
     * Bytes of every weight a decode step may read: per layer the attention projections, the router, the norms and the
     * {@code keptRouted} routed experts plus the shared ones; the LM head and final norm (not the embedding table, of
     * which a step reads one row per token). What has to stay in the last-level cache for decode to beat the DRAM bound.
     */
    static double modelBytes(ModelConfig c, boolean bf16, int keptRouted) {
        return weightBytes(c, bf16, keptRouted + c.sharedExperts(), false);
    }

    /** The size of the CPU's last-level cache (Linux sysfs, cpu0's highest index), or -1 when it cannot be read. */
    static long lastLevelCacheBytes() {
        long best = -1;
        for (int i = 0; i < 8; i++) {
            java.nio.file.Path f = java.nio.file.Path.of("/sys/devices/system/cpu/cpu0/cache/index" + i + "/size");
            if (!java.nio.file.Files.isReadable(f)) continue;
            try {
                String v = java.nio.file.Files.readString(f).trim().toUpperCase(Locale.ROOT);
                long mult = v.endsWith("K") ? 1L << 10 : v.endsWith("M") ? 1L << 20 : v.endsWith("G") ? 1L << 30 : 1;
                best = Math.max(best, Long.parseLong(v.replaceAll("[KMG]$", "")) * mult);
            } catch (java.io.IOException | NumberFormatException e) {
                // unreadable or unexpected: skip this level
            }
        }
        return best;
    }

    /** Weight bytes one decoded token reads at batch 1 (see the class comment). */
    static double decodeBytes(ModelConfig c, boolean bf16) {
        return weightBytes(c, bf16, c.k(), true);
    }

    /**
     * Weight bytes of every layer's attention projections, router, norms and {@code experts} experts, plus the LM
     * head and final norm, and one embedding row when {@code embeddingRow}: matrices in the weights' dtype, router
     * and norms in F32.
     */
    private static double weightBytes(ModelConfig c, boolean bf16, int experts, boolean embeddingRow) {
        double mb = bf16 ? 2 : 4;
        int d = c.d(), qw = c.heads() * c.headSize(), kw = c.kvHeads() * c.headSize();
        double attn = ((double) d * (qw + 2 * kw) + (double) qw * d) * mb;
        double router = (double) c.experts() * d * 4;
        double expertBytes = experts * 3.0 * d * c.expertHidden() * mb;
        double norms = (2.0 * d + (c.qkNorm() ? qw + kw : 0)) * 4;
        double head = (double) c.vocab() * d * mb + d * 4.0 + (embeddingRow ? d * mb : 0);
        return c.layers() * (attn + router + expertBytes + norms) + head;
    }

    /**
     * KV-cache bytes one decode step reads per sequence, at the mean cache length of the timed steps: step t (1 ..
     * newTokens - 1; the first new token comes from the prefill) attends over prompt + t positions of F32 K and V.
     */
    static double kvBytes(ModelConfig c, int prompt, int newTokens) {
        return kvBytes(c, prompt, newTokens, false);
    }

    /** As above for a KV cache of BF16 elements when {@code bf16}. */
    static double kvBytes(ModelConfig c, int prompt, int newTokens, boolean bf16) {
        double positions = prompt + newTokens / 2.0;
        return c.layers() * 2.0 * c.kvHeads() * c.headSize() * (bf16 ? 2 : 4) * positions;
    }

    /** Model FLOPs per prompt token of a T-token prefill (LM head once for the prompt, spread over its tokens). */
    static double prefillFlopsPerToken(ModelConfig c, int T) {
        int d = c.d(), qw = c.heads() * c.headSize(), kw = c.kvHeads() * c.headSize();
        double attnProj = 2.0 * d * (qw + 2 * kw) + 2.0 * qw * d;
        double attn = 2.0 * 2 * qw * (T + 1) / 2.0;
        double router = 2.0 * d * c.experts();
        double experts = c.k() * 6.0 * d * c.expertHidden();
        return c.layers() * (attnProj + attn + router + experts) + 2.0 * d * c.vocab() / T;
    }

    record Result(double prefillTokPerSec, double ttftMs, double decodeTokPerSec, double heapPerToken, boolean warmCapped) {
    }

    /**
     * One generator of B slots: per round, B prompts are submitted and prefilled in one step (timed: the prefill),
     * then the decode steps run until every session has its {@code newTokens} (timed, with the heap counters read
     * around them). Round 0 is warm-up.
     */
    static Result run(InferenceModel im, ExpertSet[] sub, int B, int prompt, int newTokens, int rounds, boolean kvBf16,
                      Gemm gemm, WorkerPool pool) {
        ModelConfig c = im.config();
        Generator.Options o = new Generator.Options(B, prompt + newTokens, B * prompt, null, null, 0, kvBf16, gemm, pool)
                .withRouting(null, sub);
        Random rnd = new Random(7);
        long preNs = 0, decNs = 0, decTok = 0, heap = 0;
        long[] ttft = new long[rounds];
        boolean capped;
        try (Generator g = im.generator(o)) {
            // Warm-up: C2 must compile this dtype's and batch's kernels; until it has, the Vector API runs its slow
            // Java fallback, which allocates a vector object per operation, and on a loaded machine that takes tens
            // of seconds. Rounds go on for at least WARMUP_NANOS, then until a round's decode allocates under
            // WARM_HEAP_PER_TOKEN bytes per token with the JIT idle for QUIET_NANOS / 2, or the JIT has compiled
            // nothing for QUIET_NANOS (a kernel that still allocates when compiled must not hold the run to the
            // cap), at most MAX_WARMUP_NANOS: a result reached at the cap is marked, its figures may include
            // interpreted kernels.
            var jit = ManagementFactory.getCompilationMXBean();
            long warmStart = System.nanoTime(), quietSince = warmStart, compiled = jit.getTotalCompilationTime();
            while (true) {
                long[] m = round(g, c, B, prompt, newTokens, rnd);
                long now = System.nanoTime(), ct = jit.getTotalCompilationTime();
                if (ct != compiled) {
                    compiled = ct;
                    quietSince = now;
                }
                double perTok = (double) m[3] / ((long) B * (newTokens - 1));
                capped = now - warmStart >= MAX_WARMUP_NANOS;
                // a decode that no longer allocates is not enough on its own: the first generator of a run got
                // there with C2 still compiling (its row read 60% of the bound where later ones read 85%), so the
                // JIT must also have been idle for half of QUIET_NANOS
                long quiet = now - quietSince;
                if (capped || (now - warmStart >= WARMUP_NANOS
                        && ((perTok < WARM_HEAP_PER_TOKEN && quiet >= QUIET_NANOS / 2) || quiet >= QUIET_NANOS))) break;
            }
            for (int r = 0; r < rounds; r++) {
                long[] m = round(g, c, B, prompt, newTokens, rnd);
                preNs += m[0];
                ttft[r] = m[1];
                decNs += m[2];
                decTok += (long) B * (newTokens - 1);
                heap += m[3];
            }
        }
        Arrays.sort(ttft);
        return new Result((double) B * prompt * rounds / (preNs * 1e-9), ttft[rounds / 2] * 1e-6,
                decTok / (decNs * 1e-9), (double) heap / decTok, capped);
    }

    /**
     * One round: B prompts submitted and prefilled in one step, then decode steps until every session has its
     * {@code newTokens}. Returns {prefill ns, first session's time to first token ns, decode ns, decode heap bytes}.
     */
    static long[] round(Generator g, ModelConfig c, int B, int prompt, int newTokens, Random rnd) {
        List<GenerationSession> ss = new ArrayList<>();
        long t0 = System.nanoTime();
        for (int b = 0; b < B; b++) {
            int[] p = new int[prompt];
            for (int i = 0; i < prompt; i++) p[i] = 1 + rnd.nextInt(c.vocab() - 1);
            ss.add(g.submit(new GenerationRequest(p, newTokens, Sampling.ofGreedy(), true, List.of()), null));
        }
        g.step(); // prefills all B prompts in one forward and samples their first tokens
        long pre = System.nanoTime() - t0;
        long probe0 = StepBench.allocatedBytes();
        long a0 = StepBench.allocatedBytes();
        long probe = a0 - probe0; // what one reading of the counters allocates itself
        long t1 = System.nanoTime();
        int steps = 0;
        while (g.busy()) {
            g.step();
            steps++;
        }
        long dt = System.nanoTime() - t1;
        long bytes = Math.max(0, StepBench.allocatedBytes() - a0 - probe);
        for (GenerationSession s : ss)
            if (s.finishReason() != GenerationSession.FinishReason.LENGTH || s.tokenCount() != newTokens)
                throw new IllegalStateException("session " + s.id() + " ended " + s.finishReason() + " after "
                        + s.tokenCount() + " tokens (" + s.error() + "), expected LENGTH after " + newTokens);
        if (steps != newTokens - 1)
            throw new IllegalStateException(steps + " decode steps, expected " + (newTokens - 1));
        return new long[] {pre, ss.get(0).timeToFirstTokenNanos(), dt, bytes};
    }

    /**
     * The two machine bounds, re-measured next to every table row: on a shared machine the load changes within a
     * run, and a bound measured minutes away would flatter or punish the row. Holds the {@link #STREAM_BYTES} buffer.
     */
    static final class Bounds implements AutoCloseable {
        final WorkerPool pool;
        final Arena arena = Arena.ofShared();
        final WeightGemmBench.SumTask sum = new WeightGemmBench.SumTask();
        final int blocks;
        final FmaPeakBench fma = new FmaPeakBench();
        final int[] reps = {8};
        final WorkerPool.RangeTask fmaTask;
        float sink;

        Bounds(WorkerPool pool) {
            this.pool = pool;
            MemorySegment data = arena.allocate(STREAM_BYTES, 64);
            data.fill((byte) 0x3c); // touch every page (and make the floats small, finite values)
            sum.data = data;
            sum.partial = new float[pool.threads()];
            blocks = (int) (STREAM_BYTES / (4L * WeightGemmBench.F.length() * 4));
            // compile the read loop before it measures anything: each measurement calls it only a few times (one
            // range per thread), so without this the first rows' bounds came from interpreted or C1 code (6-19 GB/s
            // where the compiled loop reads 33 on the same VM)
            int l1Blocks = (int) (16384 / (4L * WeightGemmBench.F.length() * 4));
            for (int i = 0; i < 50_000; i++) sum.run(0, l1Blocks, 0);
            fmaTask = (s, e, w) -> {
                float acc = 0;
                for (int i = 0; i < reps[0]; i++) acc += fma.fma16();
                if (acc == 42f) System.out.print("");
            };
        }

        /**
         * Streaming read of the buffer by the pool's threads ({@link WeightGemmBench.SumTask}: four vector
         * accumulators per thread), bytes/s, best of {@code passes} (after one untimed pass).
         */
        double bandwidth(int passes) {
            double best = 0;
            for (int pass = 0; pass <= passes; pass++) {
                long t0 = System.nanoTime();
                pool.parallelFor(blocks, sum);
                double sec = (System.nanoTime() - t0) * 1e-9;
                for (float p : sum.partial) sink += p;
                if (pass > 0) best = Math.max(best, STREAM_BYTES / sec);
            }
            return best;
        }

        /**
         * FP32 FMA GFLOP/s summed over the pool's threads ({@link FmaPeakBench}'s kernel), best of {@code rounds} of at
         * least 0.2 s. The first call of a run should come after {@link StepBench#fmaPeak} has warmed the kernel up.
         */
        double peak(int rounds) {
            double best = 0;
            for (int round = 0; round < rounds; round++) {
                long t0 = System.nanoTime();
                pool.parallelFor(pool.threads(), fmaTask);
                double sec = (System.nanoTime() - t0) * 1e-9;
                if (sec < 0.2) {
                    reps[0] = (int) Math.min(1 << 20, reps[0] * Math.ceil(0.2 / Math.max(sec, 1e-4)));
                    round--;
                    continue;
                }
                best = Math.max(best, pool.threads() * reps[0] * FmaPeakBench.FLOP_PER_OP / sec / 1e9);
            }
            return best;
        }

        @Override
        public void close() {
            if (sink == 42f) System.out.print("");
            arena.close();
        }
    }

    static String heapColumn(Result[] rs) {
        StringBuilder s = new StringBuilder();
        for (Result r : rs) {
            if (!s.isEmpty()) s.append(" / ");
            s.append(String.format(Locale.ROOT, "%.1f", r.heapPerToken));
        }
        return s.toString();
    }

    static String joined(int[] a) {
        StringBuilder s = new StringBuilder();
        for (int v : a) {
            if (!s.isEmpty()) s.append("/");
            s.append("B").append(v);
        }
        return s.toString();
    }

    static int indexOf(int[] a, int v) {
        for (int i = 0; i < a.length; i++) if (a[i] == v) return i;
        return -1;
    }
}
