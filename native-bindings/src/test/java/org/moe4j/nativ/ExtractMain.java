package org.moe4j.nativ;

import java.net.URL;
import java.net.URLClassLoader;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

/** A second process for NativeLibrariesTest: extracts {@code names} from {@code jar} into {@code dir}. */
public final class ExtractMain {
    private ExtractMain() {
    }

    public static void main(String[] args) throws Exception {
        // args: jar dir resourceDir name...
        try (URLClassLoader cl = new URLClassLoader(new URL[] {Path.of(args[0]).toUri().toURL()}, null)) {
            List<String> names = List.of(args).subList(3, args.length);
            List<Path> got = NativeLibraries.extract(cl, args[2], names, Path.of(args[1]), Map.of());
            System.out.println("OK " + got);
        }
    }
}
