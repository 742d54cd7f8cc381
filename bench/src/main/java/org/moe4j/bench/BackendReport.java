package org.moe4j.bench;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.openjdk.jmh.infra.BenchmarkParams;
import org.openjdk.jmh.results.Result;
import org.openjdk.jmh.results.RunResult;
import org.openjdk.jmh.runner.Runner;
import org.openjdk.jmh.runner.RunnerException;
import org.openjdk.jmh.runner.options.CommandLineOptionException;
import org.openjdk.jmh.runner.options.CommandLineOptions;
import org.openjdk.jmh.runner.options.OptionsBuilder;

/**
 * Runs BackendGemmBench and FmaPeakBench in one JMH run and prints one side-by-side table: a row per shape, a
 * column per backend, each cell GFLOP/s and % of the FMA peak measured in the same run (the machine is shared;
 * ratios within one run are what to quote).
 *
 * <p>Run: {@code java --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED -cp
 * bench/target/benchmarks.jar org.moe4j.bench.BackendReport -f 1 -wi 2 -i 3 -w 1s -r 1s
 * -p shape=sq1024,sq2048,up64,up256 --out backends.md}. JMH options may follow ({@code -prof gc} adds B/op to
 * each cell); {@code --out FILE} also writes the table as markdown.
 */
public final class BackendReport {
    private BackendReport() {
    }

    public static void main(String[] args) throws RunnerException, CommandLineOptionException, IOException {
        ReportArgs ra = ReportArgs.parse(args);
        CommandLineOptions cli = ra.jmh();
        Map<String, Map<String, Double>> table = new LinkedHashMap<>(); // shape -> backend -> GFLOP/s
        Map<String, Map<String, Double>> bytes = new LinkedHashMap<>(); // shape -> backend -> B/op (with -prof gc)
        List<String> backends = new ArrayList<>();
        // one JMH run (one acquisition of JMH's machine-wide lock): the GEMMs, then the FMA peak
        Collection<RunResult> results = new Runner(new OptionsBuilder().parent(cli)
                .include("org.moe4j.bench.(BackendGemmBench|FmaPeakBench)\\.").build()).run();
        List<Double> peaks = new ArrayList<>();
        for (RunResult r : results) {
            BenchmarkParams p = r.getParams();
            if (p.getBenchmark().contains("FmaPeakBench")) {
                peaks.add(r.getPrimaryResult().getScore() * FmaPeakBench.FLOP_PER_OP / 1e9);
                continue;
            }
            String shape = p.getParam("shape");
            String backend = p.getParam("backend");
            double gflops = r.getPrimaryResult().getScore() * BackendGemmBench.flopPerOp(shape) / 1e9;
            table.computeIfAbsent(shape, s -> new LinkedHashMap<>()).put(backend, gflops);
            Result<?> gc = r.getSecondaryResults().get("gc.alloc.rate.norm");
            if (gc != null) {
                bytes.computeIfAbsent(shape, s -> new LinkedHashMap<>()).put(backend, gc.getScore());
            }
            if (!backends.contains(backend)) {
                backends.add(backend);
            }
        }
        double peak = peaks.stream().mapToDouble(Double::doubleValue).average().orElse(Double.NaN);
        StringBuilder md = new StringBuilder();
        md.append("| shape |");
        for (String b : backends) {
            md.append(' ').append(b).append(" |");
        }
        md.append("\n|---|");
        md.append("---:|".repeat(backends.size()));
        md.append('\n');
        for (Map.Entry<String, Map<String, Double>> row : table.entrySet()) {
            int[] d = BackendGemmBench.dims(row.getKey());
            md.append(String.format(Locale.ROOT, "| %s (%dx%dx%d%s%s) |", row.getKey(), d[0], d[1], d[2],
                    d[3] != 0 ? " A^T" : "", d[4] != 0 ? " B^T" : ""));
            for (String b : backends) {
                Double g = row.getValue().get(b);
                Double bo = bytes.getOrDefault(row.getKey(), Map.of()).get(b);
                md.append(g == null ? " - |" : String.format(Locale.ROOT, " %.0f (%.0f%%%s) |", g, 100 * g / peak,
                        bo == null ? "" : String.format(Locale.ROOT, ", %.1f B/op", bo)));
            }
            md.append('\n');
        }
        String head = String.format(Locale.ROOT, "Backend GEMM report: GFLOP/s (%% of the FP32 FMA peak); FMA peak "
                + "measured in this run: %.1f GFLOP/s", peak);
        ra.publish(head, md);
    }
}
