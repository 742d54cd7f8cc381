package org.moe4j.props.io;

import java.nio.file.Path;
import org.moe4j.io.checkpoint.CheckpointFolder;

/**
 * A second process for {@link CheckpointSafetyTest}: takes the save lock of the folder named by its argument,
 * prints "locked", and holds it until its standard input closes.
 */
public final class LockHolder {
    private LockHolder() {
    }

    public static void main(String[] args) throws Exception {
        try (CheckpointFolder.Lock lock = CheckpointFolder.lock(Path.of(args[0]))) {
            System.out.println(lock != null ? "locked" : "no lock");
            System.out.flush();
            while (System.in.read() >= 0) {
                // hold until the test closes our input
            }
        }
    }
}
