package org.moe4j.bench;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.openjdk.jmh.runner.options.CommandLineOptionException;
import org.openjdk.jmh.runner.options.CommandLineOptions;

/** The command line of a report main: JMH's own options plus {@code --out FILE} for the markdown table. */
record ReportArgs(Path out, CommandLineOptions jmh) {
    static ReportArgs parse(String[] args) throws CommandLineOptionException {
        Path out = null;
        List<String> jmhArgs = new ArrayList<>();
        for (int i = 0; i < args.length; i++) {
            if (args[i].equals("--out")) {
                if (i + 1 >= args.length) {
                    throw new IllegalArgumentException("--out needs a file name");
                }
                out = Path.of(args[++i]);
            } else {
                jmhArgs.add(args[i]);
            }
        }
        return new ReportArgs(out, new CommandLineOptions(jmhArgs.toArray(new String[0])));
    }

    /** Prints the heading and the table, and writes both to {@code --out} when given. */
    void publish(String heading, CharSequence table) throws IOException {
        System.out.println();
        System.out.println(heading);
        System.out.print(table);
        if (out != null) {
            Files.writeString(out, heading + "\n\n" + table);
        }
    }
}
