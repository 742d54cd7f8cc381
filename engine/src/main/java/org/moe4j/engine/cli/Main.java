package org.moe4j.engine.cli;

import java.io.PrintWriter;
import java.util.Map;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.ConfigException;
import picocli.CommandLine;
import picocli.CommandLine.Command;

/** Entry point of {@code ./moe4j}: one picocli subcommand per main. */
@Command(name = "moe4j", mixinStandardHelpOptions = true, version = "moe4j 0.1.0",
        description = "A JVM-native engine that trains and serves mixture-of-experts language models.",
        subcommands = {QuickstartCommand.class, TrainCommand.class, PrepareDataCommand.class, SelfCheckCommand.class,
                NumericsCommand.class, ConvertCommand.class, GenerateCommand.class, ServeCommand.class,
                SelectCommand.class, PruneCommand.class, EvalCommand.class, AnalyzeCommand.class, StudyCommand.class})
public final class Main implements Runnable {
    /** The JDK's log format property; {@code %4$s} is the level, {@code %5$s} the message, {@code %6$s} a throwable. */
    static final String LOG_FORMAT_PROPERTY = "java.util.logging.SimpleFormatter.format";
    /** One line per log record ("WARNING: GEMM backend: java (...)"), not the JDK's two (date and class, then text). */
    static final String ONE_LINE_FORMAT = "%4$s: %5$s%6$s%n";

    /**
     * Which option of a subcommand sets a field that a {@link ConfigException} can name, so that the error speaks of
     * what the user typed ({@code --steps -1}) rather than of the field it became ({@code LrSchedule.total}).
     */
    static final Map<String, Map<String, String>> OPTION_OF_FIELD = Map.of(
            "train", Map.of("LrSchedule.peak", "--lr", "LrSchedule.warmup", "--warmup", "LrSchedule.total", "--steps",
                    "SyntheticCorpus.domains", "--domains", "ShardBatchSource.seqLen", "--seq"),
            "quickstart", Map.of("LrSchedule.total", "--steps", "ShardBatchSource.seqLen", "--seq"));

    public static void main(String[] args) {
        oneLineLogs();
        System.exit(execute(null, args));
    }

    /**
     * Runs the command line and returns the exit code (0 ok, 1 a reported error, 2 a usage error); errors go to
     * {@code err} (null: standard error).
     */
    static int execute(PrintWriter err, String... args) {
        CommandLine main = new CommandLine(new Main());
        if (err != null) main.setErr(err);
        return main.setExecutionExceptionHandler((ex, cl, parsed) -> {
            PrintWriter e = main.getErr();
            e.println("moe4j: " + describe(ex, cl.getCommandName()));
            if (Boolean.getBoolean("moe4j.debug")) {
                ex.printStackTrace(e);
            }
            e.flush();
            return 1;
        }).execute(args);
    }

    /**
     * The error line for {@code ex} thrown by subcommand {@code command}: a {@link ConfigException} on a field the
     * command's options set is worded as that option; any other moe4j error as its message; anything else is a
     * defect and says so, with how to see the stack trace.
     */
    static String describe(Exception ex, String command) {
        if (ex instanceof ConfigException ce && ce.field() != null) {
            String option = OPTION_OF_FIELD.getOrDefault(command, Map.of()).get(ce.field());
            if (option != null) return option + " " + ce.value() + ": " + ce.rule();
        }
        if (ex instanceof Moe4jException) return ex.getMessage();
        return "internal error: " + ex + " (a defect in moe4j, please report it; run with MOE4J_JVM_OPTS=-Dmoe4j.debug=true "
                + "for the stack trace)";
    }

    /**
     * Unless the user configured java.util.logging (a config file, class or format of their own), log records print
     * on one line each; the JDK's default spends two lines per record, and the README promises one WARNING line
     * when a native library is missing. Must run before the first record is logged.
     */
    static void oneLineLogs() {
        if (System.getProperty("java.util.logging.config.file") == null
                && System.getProperty("java.util.logging.config.class") == null
                && System.getProperty(LOG_FORMAT_PROPERTY) == null) {
            System.setProperty(LOG_FORMAT_PROPERTY, ONE_LINE_FORMAT);
        }
    }

    @Override
    public void run() {
        new CommandLine(this).usage(System.out);
    }
}
