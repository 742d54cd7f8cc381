package org.moe4j.bench;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Locale;
import java.util.Random;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.WeightGemm;
import org.moe4j.simd.WorkerPool;

/**
 * Question: at the size of a decode step's products (an expert's gate+up, N 1024 x K 512: 2 MB in F32, 1 MB in BF16),
 * how fast does {@link WeightGemm} read weights that come from DRAM, against the streaming read bandwidth measured in
 * the same run — and how much of DecodeBench's "% of bound" is the last-level cache?
 *
 * <p>Per row: 1 GiB of such experts (32 per "layer"); each pass calls WeightGemm on every expert once — one call
 * per expert ({@code single}) or the experts in {@code grouped} calls of 4 or 16 (what a decode step at batch 4/16
 * does) — with 1 or 2 activation rows each, so every weight byte comes from DRAM. The {@code hot} rows read only
 * expert 0 of each layer (32 MB in F32, 16 MB in BF16): a footprint the last-level cache holds, like the experts a
 * random-weight model routes most tokens to. GB/s = weight bytes read / wall time, best of {@code --rounds}
 * rounds of at least 0.3 s; % = of the same-run 2-thread streaming read ({@link DecodeBench.Bounds}).
 *
 * <p>{@code --mapped DIR}: the weights are written to a new file DIR/experts-*.bin and read from the file mapped as the engine maps
 * checkpoints ({@code MappedFiles.mapReadOnly}: a plain native segment), instead of an arena's (the file is deleted at
 * the end); with {@code -Desb.raw=true} through the mapped segment itself, as moe4j did before.
 *
 * <p>Run: {@code ./moe4j bench-main ExpertStreamBench [--rounds 5] [--mapped DIR]}.
 */
public final class ExpertStreamBench {
    private ExpertStreamBench() {
    }

    static final int N = 1024, K = 512, E = 32;

    public static void main(String[] args) {
        int rounds = 5;
        java.nio.file.Path mapped = null;
        for (int i = 0; i < args.length; i++) {
            if (args[i].equals("--rounds") && i + 1 < args.length) rounds = Integer.parseInt(args[++i]);
            else if (args[i].equals("--mapped") && i + 1 < args.length) mapped = java.nio.file.Path.of(args[++i]);
            else throw new IllegalArgumentException("ExpertStreamBench: unknown option " + args[i]
                    + " (expected --rounds N, --mapped DIR)");
        }
        WorkerPool pool = WorkerPool.common();
        try (DecodeBench.Bounds bounds = new DecodeBench.Bounds(pool)) {
            double bw = bounds.bandwidth(4);
            System.out.printf(Locale.ROOT, "streaming read, %d threads, %d MiB: %.2f GB/s; experts N %d x K %d, %d per layer, "
                    + "1 GiB of them per dtype, in %s (JDK %s)%n%n", pool.threads(), DecodeBench.STREAM_BYTES >> 20, bw / 1e9, N, K, E,
                    mapped == null ? "an arena" : "a mapped file in " + mapped, Runtime.version());
            System.out.println("| dtype | calls | rows per expert | footprint | GB/s | % of read bandwidth |");
            System.out.println("|---|---|---:|---:|---:|---:|");
            for (boolean bf16 : new boolean[] {false, true}) {
                long expBytes = (long) N * K * (bf16 ? 2 : 4);
                int layers = (int) ((1L << 30) / (E * expBytes));
                java.nio.file.Path file = null;
                try (Arena arena = Arena.ofShared()) {
                    MemorySegment w = arena.allocate(layers * E * expBytes, 64);
                    Random rnd = new Random(1);
                    // small finite values either way: bf16 pairs 0x3c00 +- noise in the mantissa, or as F32 bits
                    for (long i = 0; i < w.byteSize() / 4; i++)
                        w.setAtIndex(ValueLayout.JAVA_INT, i, 0x3c003c00 ^ (rnd.nextInt() & 0x007f007f));
                    if (mapped != null) {
                        // a new file of our own (never a user's file of the same name), deleted at the end
                        try {
                            file = java.nio.file.Files.createTempFile(mapped, "experts-" + (bf16 ? "bf16" : "f32") + "-", ".bin");
                        } catch (java.io.IOException e) {
                            throw new java.io.UncheckedIOException("--mapped " + mapped, e);
                        }
                        try (java.nio.channels.FileChannel ch = java.nio.channels.FileChannel.open(file,
                                java.nio.file.StandardOpenOption.READ, java.nio.file.StandardOpenOption.WRITE)) {
                            for (long off = 0; off < w.byteSize(); off += 1L << 28)
                                ch.write(w.asSlice(off, Math.min(1L << 28, w.byteSize() - off)).asByteBuffer(), off);
                            // as the engine maps checkpoints (a plain native segment), or -Desb.raw=true: the mapped
                            // segment itself, what moe4j used before (its class slows every vector loop; see MappedFiles)
                            w = Boolean.getBoolean("esb.raw")
                                    ? ch.map(java.nio.channels.FileChannel.MapMode.READ_ONLY, 0, w.byteSize(), arena)
                                    : org.moe4j.io.MappedFiles.mapReadOnly(ch, arena);
                        } catch (java.io.IOException e) {
                            throw new java.io.UncheckedIOException(file.toString(), e);
                        }
                        // in the page cache, like a checkpoint that has been read once
                        for (long off = 0; off < w.byteSize(); off += 4096) w.get(ValueLayout.JAVA_BYTE, off);
                    }
                    final MemorySegment wf = w;
                    MemorySegment x = arena.allocate(4L * 32 * K, 64), out = arena.allocate(4L * 32 * N, 64);
                    for (long i = 0; i < 32L * K; i++) x.setAtIndex(ValueLayout.JAVA_FLOAT, i, (float) rnd.nextGaussian());
                    WeightGemm wg = new WeightGemm(pool, new JavaGemm(pool), K);
                    String dt = bf16 ? "BF16" : "F32";
                    for (int groups : new int[] {1, 4, 16}) {
                        for (int rows : new int[] {1, 2, 16}) {
                            if (groups * rows > 32) continue; // x and out hold 32 rows
                            double gbs = best(rounds, () -> pass(wg, bf16, wf, x, out, layers, groups, rows, false)) * layers * E * expBytes;
                            System.out.printf(Locale.ROOT, "| %s | %s | %d | %d MB | %.2f | %.1f%% |%n", dt,
                                    groups == 1 ? "single" : "grouped by " + groups, rows, layers * E * expBytes >> 20,
                                    gbs / 1e9, 100 * gbs / bw);
                        }
                    }
                    for (int rows : new int[] {1, 4, 16}) {
                        double hot = best(rounds, () -> pass(wg, bf16, wf, x, out, layers, 1, rows, true)) * layers * expBytes;
                        System.out.printf(Locale.ROOT, "| %s | single, hot (expert 0 of each layer) | %d | %d MB | %.2f | %.1f%% |%n",
                                dt, rows, layers * expBytes >> 20, hot / 1e9, 100 * hot / bw);
                    }
                } finally {
                    if (file != null) {
                        try {
                            java.nio.file.Files.deleteIfExists(file);
                        } catch (java.io.IOException ignored) {
                            // a benchmark's scratch file
                        }
                    }
                }
            }
            System.out.printf(Locale.ROOT, "%nstreaming read again at the end: %.2f GB/s%n", bounds.bandwidth(4) / 1e9);
        }
    }

    /** Passes per second (best of rounds, each >= 0.3 s). */
    static double best(int rounds, Runnable pass) {
        pass.run(); // warm-up
        double best = 0;
        for (int r = 0; r < rounds; r++) {
            long t0 = System.nanoTime();
            int n = 0;
            do {
                pass.run();
                n++;
            } while (System.nanoTime() - t0 < 300_000_000L);
            best = Math.max(best, n / ((System.nanoTime() - t0) * 1e-9));
        }
        return best;
    }

    /** One pass: every expert of every layer once (hot: expert 0 of each layer only). */
    static void pass(WeightGemm wg, boolean bf16, MemorySegment w, MemorySegment x, MemorySegment out, int layers,
                     int groups, int rows, boolean hot) {
        int[] rs = new int[groups];
        long[] xo = new long[groups], wo = new long[groups], oo = new long[groups];
        for (int l = 0; l < layers; l++) {
            for (int e0 = 0; e0 < (hot ? 1 : E); e0 += groups) {
                for (int g = 0; g < groups; g++) {
                    rs[g] = rows;
                    xo[g] = (long) g * rows * K;
                    oo[g] = (long) g * rows * N;
                    wo[g] = ((long) l * E + e0 + g) * N * K;
                }
                if (groups == 1) {
                    if (bf16) wg.bf16(rows, N, K, x, 0, K, w, wo[0], K, 0f, out, 0, N);
                    else wg.f32(rows, N, K, x, 0, K, w, wo[0], K, 0f, out, 0, N);
                } else {
                    wg.grouped(bf16, groups, rs, xo, wo, oo, N, K, x, K, w, K, 0f, out, N);
                }
            }
        }
    }
}
