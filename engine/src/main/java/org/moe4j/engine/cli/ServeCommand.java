package org.moe4j.engine.cli;

import java.nio.file.Path;
import java.util.concurrent.Callable;
import java.util.concurrent.CountDownLatch;
import org.moe4j.Moe4jException;
import org.moe4j.engine.inference.Generator;
import org.moe4j.engine.inference.InferenceModel;
import org.moe4j.engine.numerics.NumericsInputs;
import org.moe4j.engine.serve.OpenAiServer;
import org.moe4j.nativ.GemmBackends;
import org.moe4j.simd.WorkerPool;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code ./moe4j serve}: a checkpoint behind an OpenAI-compatible HTTP endpoint, until SIGINT. */
@Command(name = "serve", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Serves a checkpoint over HTTP with OpenAI's API: POST /v1/completions, POST /v1/chat/completions "
                + "(stream: server-sent events), GET /v1/models, GET /health. Requests that arrive together are "
                + "decoded in one batch. Chat messages are joined as \"role: content\\n\" lines, then \"assistant: \". "
                + "Stops on Ctrl-C."})
public final class ServeCommand implements Callable<Integer> {
    @Option(names = "--ckpt", required = true, paramLabel = "DIR",
            description = "checkpoint folder (config.json + model.safetensors [+ tokenizer.json: else token-id prompts only])")
    Path ckpt;

    @Option(names = "--port", defaultValue = "8080", description = "TCP port; 0 picks a free one (default: ${DEFAULT-VALUE})")
    int port;

    @Option(names = "--host", defaultValue = "127.0.0.1", description = "address to listen on (default: ${DEFAULT-VALUE})")
    String host;

    @Option(names = "--slots", defaultValue = "8", description = "sequences decoded together (KV-cache slots; default: ${DEFAULT-VALUE})")
    int slots;

    @Option(names = "--max-positions", defaultValue = "0", paramLabel = "N",
            description = "prompt + new tokens per sequence; 0 = the model's max_position_embeddings (default: ${DEFAULT-VALUE})")
    int maxPositions;

    @Option(names = "--weights-dtype", defaultValue = "f32", paramLabel = "f32|bf16",
            description = "dtype of the weight matrices in memory (default: ${DEFAULT-VALUE})")
    String weightsDtype;

    @Option(names = "--kv-dtype", defaultValue = "f32", paramLabel = "f32|bf16",
            description = "KV-cache precision: bf16 halves its memory and what a decode step reads from it (default: ${DEFAULT-VALUE})")
    String kvDtype;

    @Option(names = "--k-per-layer", paramLabel = "K,K,...",
            description = "routed k' per layer (elastic k), shared experts not counted (default: the checkpoint's k - s)")
    String kPerLayer;

    @Option(names = "--gemm", description = "GEMM backend: auto, java, onednn, onednn_matmul or cuda "
            + "(default: -Dmoe4j.gemm, $MOE4J_GEMM, else auto)")
    String gemm;

    @Override
    public Integer call() throws InterruptedException {
        boolean bf16 = GenerateCommand.isBf16("--weights-dtype", weightsDtype);
        boolean kvBf16 = GenerateCommand.isBf16("--kv-dtype", kvDtype);
        if (port < 0 || port > 65535) throw new Moe4jException("--port " + port + ": expected 0..65535");
        WorkerPool pool = WorkerPool.common();
        GemmBackends.Choice backend = gemm == null ? GemmBackends.fromEnvironment(pool) : GemmBackends.select(gemm, pool);
        InferenceModel model = InferenceModel.load(ckpt, bf16);
        OpenAiServer server;
        try {
            int layers = model.config().layers(), routed = model.config().routedExperts();
            int[] k = kPerLayer == null ? null : NumericsInputs.parseKPerLayer(kPerLayer, layers, routed);
            Generator.Options o = Generator.Options.defaults(backend.gemm(), pool).withSlots(slots)
                    .withPositions(maxPositions).withRouting(k, null).withKvBf16(kvBf16);
            Path name = ckpt.toAbsolutePath().normalize().getFileName();
            server = OpenAiServer.start(model, o, name == null ? ckpt.toString() : name.toString(), host, port);
        } catch (RuntimeException e) {
            model.close();
            throw e;
        }
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                server.close();
                model.close();
            } finally {
                stopped.countDown();
            }
        }, "moe4j-serve-shutdown"));
        System.out.println("moe4j serve: listening on http://" + host + ":" + server.port() + " (model "
                + server.modelId() + ": " + model + ", " + slots + " slots, GEMM " + backend.gemm().name() + ")");
        System.out.flush();
        stopped.await();
        return 0;
    }
}
