package org.moe4j.engine.cli;

import java.util.concurrent.Callable;
import picocli.CommandLine.Command;

/** The README's main job on its embedded default. Until the engine trains, it is the kernel self-check. */
@Command(name = "quickstart", mixinStandardHelpOptions = true,
        description = "The main job on the embedded default (today: the kernel self-check).")
public final class QuickstartCommand implements Callable<Integer> {
    @Override
    public Integer call() {
        return new SelfCheckCommand().call();
    }
}
