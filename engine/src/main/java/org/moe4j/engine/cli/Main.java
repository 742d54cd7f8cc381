package org.moe4j.engine.cli;

import picocli.CommandLine;
import picocli.CommandLine.Command;

/** Entry point of {@code ./moe4j}: one picocli subcommand per main. */
@Command(name = "moe4j", mixinStandardHelpOptions = true, version = "moe4j 0.1.0",
        description = "A JVM-native engine that trains and serves mixture-of-experts language models.",
        subcommands = {QuickstartCommand.class, TrainCommand.class, PrepareDataCommand.class, SelfCheckCommand.class,
                ServeCommand.class,
                NumericsCommand.class, ConvertCommand.class})
public final class Main implements Runnable {
    public static void main(String[] args) {
        int code = new CommandLine(new Main()).setExecutionExceptionHandler((ex, cl, parsed) -> {
            cl.getErr().println("moe4j: " + ex.getMessage());
            if (Boolean.getBoolean("moe4j.debug")) {
                ex.printStackTrace(cl.getErr());
            }
            return 1;
        }).execute(args);
        System.exit(code);
    }

    @Override
    public void run() {
        new CommandLine(this).usage(System.out);
    }
}
