package org.moe4j.bench;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Locale;
import org.openjdk.jmh.infra.BenchmarkParams;
import org.openjdk.jmh.profile.GCProfiler;
import org.openjdk.jmh.results.Result;
import org.openjdk.jmh.results.RunResult;
import org.openjdk.jmh.runner.Runner;
import org.openjdk.jmh.runner.RunnerException;
import org.openjdk.jmh.runner.options.ChainedOptionsBuilder;
import org.openjdk.jmh.runner.options.CommandLineOptionException;
import org.openjdk.jmh.runner.options.CommandLineOptions;
import org.openjdk.jmh.runner.options.OptionsBuilder;

/**
 * Runs FmaPeakBench, GemmBench and MoeGemmBench in one JMH run (with the gc profiler) and prints one table: shape,
 * GFLOP/s, % of the FMA peak measured in the same run, and B/op. Every GEMM is judged against that same-run
 * peak because the machine is shared and absolute figures drift.
 *
 * <p>Run: {@code java --add-modules jdk.incubator.vector -cp bench/target/benchmarks.jar org.moe4j.bench.GemmReport
 * -f 1 -wi 2 -i 3 -w 1s -r 1s -p rows=64,256 -p d=512 --out gemm.md}. Any JMH options may follow; a benchmark
 * regex replaces the default set; {@code --out FILE} also writes the table as markdown.
 */
public final class GemmReport {
    private GemmReport() {
    }

    record Row(String shape, double gflops, double bytesPerOp) {
    }

    public static void main(String[] args) throws RunnerException, CommandLineOptionException, IOException {
        ReportArgs ra = ReportArgs.parse(args);
        CommandLineOptions cli = ra.jmh();
        ChainedOptionsBuilder ob = new OptionsBuilder().parent(cli).addProfiler(GCProfiler.class);
        if (cli.getIncludes().isEmpty()) {
            ob.include("org.moe4j.bench.(FmaPeakBench|GemmBench|MoeGemmBench)\\.");
        }
        Collection<RunResult> results = new Runner(ob.build()).run();

        double peak = Double.NaN;
        List<Row> rows = new ArrayList<>();
        for (RunResult r : results) {
            BenchmarkParams p = r.getParams();
            String bench = p.getBenchmark();
            String method = bench.substring(bench.lastIndexOf('.') + 1);
            double opsPerSec = r.getPrimaryResult().getScore(); // Throughput, ops/s
            Result<?> gc = r.getSecondaryResults().get("gc.alloc.rate.norm");
            double bOp = gc == null ? Double.NaN : gc.getScore();
            double flop;
            String shape;
            if (bench.contains("FmaPeakBench")) {
                flop = FmaPeakBench.FLOP_PER_OP;
                shape = "FMA peak (" + p.getThreads() + " threads)";
                peak = opsPerSec * flop / 1e9;
            } else if (bench.contains("MoeGemmBench")) {
                int rw = Integer.parseInt(p.getParam("rows"));
                int d = Integer.parseInt(p.getParam("d"));
                int h = Integer.parseInt(p.getParam("h"));
                flop = MoeGemmBench.flopPerOp(rw, d, h);
                shape = switch (method) {
                    case "up" -> "up R=" + rw + " [" + rw + "x" + d + "]x[" + h + "x" + d + "]^T";
                    case "down" -> "down R=" + rw + " [" + rw + "x" + h + "]x[" + d + "x" + h + "]^T";
                    default -> "dW1 R=" + rw + " [" + rw + "x" + h + "]^Tx[" + rw + "x" + d + "]";
                };
            } else if (bench.contains("GemmBench")) {
                int s = Integer.parseInt(p.getParam("size"));
                flop = GemmBench.flopPerOp(s);
                shape = "square " + s + "^3";
            } else {
                continue;
            }
            rows.add(new Row(shape, opsPerSec * flop / 1e9, bOp));
        }
        StringBuilder md = new StringBuilder();
        md.append("| shape | GFLOP/s | % of FMA peak | B/op |\n|---|---:|---:|---:|\n");
        for (Row row : rows) {
            md.append(String.format(Locale.ROOT, "| %s | %.1f | %.0f%% | %.1f |%n", row.shape(), row.gflops(),
                    100 * row.gflops() / peak, row.bytesPerOp()));
        }
        ra.publish("GEMM report, FMA peak measured in the same run: "
                + String.format(Locale.ROOT, "%.1f", peak) + " GFLOP/s", md);
    }
}
