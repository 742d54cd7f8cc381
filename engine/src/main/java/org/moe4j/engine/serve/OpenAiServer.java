package org.moe4j.engine.serve;

import com.fasterxml.jackson.core.JacksonException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.inference.GenerationSession;
import org.moe4j.engine.inference.Generator;
import org.moe4j.engine.inference.InferenceModel;
import org.moe4j.engine.inference.TokenListener;

/**
 * An OpenAI-compatible HTTP endpoint on the JDK's {@link HttpServer}: {@code POST /v1/completions},
 * {@code POST /v1/chat/completions} (both with {@code stream} as server-sent events), {@code GET /v1/models},
 * {@code GET /health}.
 *
 * <p>One scheduler thread owns the {@link Generator} and calls {@link Generator#step()} while any session is queued
 * or running, and sleeps on a monitor when idle. Handler threads (virtual threads: a streaming request blocks its
 * thread for the whole generation) only submit and then wait on their session or on a per-request queue of token
 * events that its listener fills; so requests that arrive together are prefilled and decoded in one batch.
 */
public final class OpenAiServer implements AutoCloseable {
    static final ObjectMapper JSON = new ObjectMapper();
    /** Bodies above this are refused (413): a prompt never needs more. */
    static final int MAX_BODY_BYTES = 8 << 20;

    private final InferenceModel model;
    private final Generator generator;
    private final String modelId;
    private final CompletionRequest.Limits limits;
    private final HttpServer http;
    private final ExecutorService handlers;
    private final Thread scheduler;
    private final Object wake = new Object();
    private final AtomicLong ids = new AtomicLong();
    private volatile boolean stopping;
    private volatile String fatal;

    private OpenAiServer(InferenceModel model, Generator.Options options, String modelId, String host, int port) {
        this.model = model;
        this.modelId = modelId;
        ModelConfig c = model.config();
        int positions = options.maxPositions() <= 0 ? c.maxSeq() : options.maxPositions();
        int prefill = options.prefillTokens() <= 0 ? positions : options.prefillTokens();
        this.limits = new CompletionRequest.Limits(c.vocab(), Math.min(prefill, positions - 1), positions);
        this.generator = model.generator(options);
        try {
            http = HttpServer.create(new InetSocketAddress(host, port), 64);
        } catch (IOException e) {
            generator.close();
            throw new Moe4jException("serve: cannot listen on " + host + ":" + port + ": " + e.getMessage(), e);
        }
        handlers = Executors.newVirtualThreadPerTaskExecutor();
        http.setExecutor(handlers);
        http.createContext("/", this::handle);
        scheduler = new Thread(this::schedule, "moe4j-serve-scheduler");
        scheduler.setDaemon(true);
    }

    /** Starts serving {@code model} on host:port (port 0 = a free one, see {@link #port()}). */
    public static OpenAiServer start(InferenceModel model, Generator.Options options, String modelId, String host,
                                     int port) {
        OpenAiServer s = new OpenAiServer(model, options, modelId, host, port);
        s.scheduler.start();
        s.http.start();
        return s;
    }

    public int port() {
        return http.getAddress().getPort();
    }

    public String host() {
        return http.getAddress().getHostString();
    }

    public String modelId() {
        return modelId;
    }

    public Generator generator() {
        return generator;
    }

    /** Stops accepting, ends the sessions in flight (CANCELLED) and frees the generator; the model stays open. */
    @Override
    public void close() {
        http.stop(0);
        synchronized (wake) {
            stopping = true;
            wake.notifyAll();
        }
        try {
            scheduler.join(10_000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        if (!scheduler.isAlive()) generator.close(); // else a step is stuck: its buffers must not be freed under it
        handlers.shutdown();
        try {
            handlers.awaitTermination(5, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    // ---------------------------------------------------------------- scheduler

    private void schedule() {
        while (true) {
            synchronized (wake) {
                // a submit happens before its notify, so a session queued after busy() said no wakes this wait
                while (!stopping && !generator.busy()) {
                    try {
                        wake.wait();
                    } catch (InterruptedException e) {
                        return;
                    }
                }
                if (stopping) return;
            }
            try {
                generator.step();
            } catch (RuntimeException e) {
                // a failed step leaves the generator in an unknown state: end every session and refuse new work
                fatal = "generation failed: " + e;
                System.err.println("moe4j serve: " + fatal);
                stopping = true;
                generator.close();
                return;
            }
        }
    }

    private GenerationSession submit(CompletionRequest q, TokenListener listener) {
        if (stopping)
            throw new ApiError(503, fatal != null ? fatal : "the server is shutting down", "server_error", null, null);
        GenerationSession s;
        try {
            s = generator.submit(q.toGeneration(), listener);
        } catch (Moe4jException e) {
            throw ApiError.invalid("prompt", e.getMessage());
        }
        synchronized (wake) {
            wake.notifyAll();
        }
        return s;
    }

    // ---------------------------------------------------------------- routing

    private void handle(HttpExchange ex) {
        try (ex) {
            try {
                route(ex);
            } catch (ApiError e) {
                sendError(ex, e);
            } catch (RuntimeException e) {
                sendError(ex, new ApiError(500, "internal error: " + e, "server_error", null, null));
            }
        } catch (IOException | UncheckedIOException e) {
            // the client went away; nothing to answer
        }
    }

    private void route(HttpExchange ex) throws IOException {
        String path = ex.getRequestURI().getPath();
        if (path.length() > 1 && path.endsWith("/")) path = path.substring(0, path.length() - 1);
        String method = ex.getRequestMethod();
        String allowed = switch (path) {
            case "/health", "/v1/models" -> "GET";
            case "/v1/completions", "/v1/chat/completions" -> "POST";
            default -> null;
        };
        if (allowed == null)
            throw new ApiError(404, "unknown route " + method + " " + path + " (routes: POST /v1/completions, POST "
                    + "/v1/chat/completions, GET /v1/models, GET /health)", "invalid_request_error", null, "not_found");
        if (!allowed.equals(method)) {
            ex.getResponseHeaders().set("Allow", allowed);
            throw new ApiError(405, path + " takes " + allowed + ", not " + method, "invalid_request_error", null,
                    "method_not_allowed");
        }
        switch (path) {
            case "/health" -> sendJson(ex, 200, JSON.createObjectNode().put("status", "ok"));
            case "/v1/models" -> {
                ObjectNode m = JSON.createObjectNode().put("id", modelId).put("object", "model").put("created", 0)
                        .put("owned_by", "moe4j");
                ObjectNode list = JSON.createObjectNode().put("object", "list");
                list.putArray("data").add(m);
                sendJson(ex, 200, list);
            }
            case "/v1/completions" -> complete(ex, false);
            default -> complete(ex, true);
        }
    }

    private JsonNode readBody(HttpExchange ex) throws IOException {
        byte[] body;
        try (InputStream in = ex.getRequestBody()) {
            body = in.readNBytes(MAX_BODY_BYTES + 1);
        }
        if (body.length > MAX_BODY_BYTES)
            throw new ApiError(413, "the request body is over " + MAX_BODY_BYTES + " bytes", "invalid_request_error",
                    null, "request_too_large");
        if (body.length == 0) throw ApiError.invalid(null, "the request body is empty; expected a JSON object");
        try {
            return JSON.readTree(body);
        } catch (JacksonException e) {
            throw ApiError.invalid(null, "the request body is not valid JSON: " + e.getOriginalMessage());
        }
    }

    // ---------------------------------------------------------------- completions

    private void complete(HttpExchange ex, boolean chat) throws IOException {
        CompletionRequest q = CompletionRequest.parse(readBody(ex), chat, limits, model.tokenizer());
        String id = (chat ? "chatcmpl-" : "cmpl-") + ids.incrementAndGet();
        long created = System.currentTimeMillis() / 1000;
        if (q.stream()) {
            stream(ex, q, chat, id, created);
            return;
        }
        GenerationSession s = submit(q, null).await();
        failed(s);
        ObjectNode choice = JSON.createObjectNode().put("index", 0);
        if (chat) choice.putObject("message").put("role", "assistant").put("content", s.text());
        else choice.put("text", s.text());
        choice.put("finish_reason", finishReason(s.finishReason()));
        ArrayNode tokens = choice.putArray("token_ids"); // extension: the new ids (the only output without a tokenizer)
        for (int t : s.tokens()) tokens.add(t);
        ObjectNode out = envelope(id, chat ? "chat.completion" : "text_completion", created);
        out.putArray("choices").add(choice);
        out.putObject("usage").put("prompt_tokens", q.prompt().length).put("completion_tokens", s.tokenCount())
                .put("total_tokens", q.prompt().length + s.tokenCount());
        sendJson(ex, 200, out);
    }

    /** A token of a streamed session, or its end ({@code session} set). */
    private record Event(int token, String delta, GenerationSession session) {
    }

    private void stream(HttpExchange ex, CompletionRequest q, boolean chat, String id, long created) throws IOException {
        BlockingQueue<Event> events = new LinkedBlockingQueue<>();
        GenerationSession s = submit(q, new TokenListener() {
            @Override
            public void onToken(GenerationSession session, int tokenId, String textDelta) {
                events.add(new Event(tokenId, textDelta, null));
            }

            @Override
            public void onDone(GenerationSession session) {
                events.add(new Event(-1, null, session));
            }
        });
        String object = chat ? "chat.completion.chunk" : "text_completion";
        ex.getResponseHeaders().set("Content-Type", "text/event-stream; charset=utf-8");
        ex.getResponseHeaders().set("Cache-Control", "no-cache");
        try {
            ex.sendResponseHeaders(200, 0);
            OutputStream out = ex.getResponseBody();
            if (chat) {
                ObjectNode c = chunk(id, object, created, false);
                ((ObjectNode) c.get("choices").get(0)).putObject("delta").put("role", "assistant").put("content", "");
                event(out, c);
            }
            while (true) {
                Event e;
                try {
                    e = events.take();
                } catch (InterruptedException ie) {
                    Thread.currentThread().interrupt();
                    s.cancel();
                    return;
                }
                ObjectNode c = chunk(id, object, created, e.session() != null);
                ObjectNode choice = (ObjectNode) c.get("choices").get(0);
                if (e.session() == null) {
                    if (chat) choice.putObject("delta").put("content", e.delta());
                    else choice.put("text", e.delta());
                    choice.putArray("token_ids").add(e.token());
                    event(out, c);
                    continue;
                }
                GenerationSession.FinishReason r = e.session().finishReason();
                if (r == GenerationSession.FinishReason.ERROR || r == GenerationSession.FinishReason.CANCELLED) {
                    ObjectNode err = JSON.createObjectNode();
                    err.putObject("error").put("message", r == GenerationSession.FinishReason.ERROR ? e.session().error()
                            : "generation cancelled (the server is shutting down)").put("type", "server_error")
                            .putNull("param").putNull("code");
                    event(out, err);
                } else {
                    if (chat) choice.putObject("delta");
                    else choice.put("text", "");
                    choice.put("finish_reason", finishReason(r));
                    event(out, c);
                }
                out.write("data: [DONE]\n\n".getBytes(StandardCharsets.UTF_8));
                out.flush();
                return;
            }
        } catch (IOException e) {
            s.cancel(); // the client went away: free the slot at the next step
            throw e;
        }
    }

    private ObjectNode chunk(String id, String object, long created, boolean last) {
        ObjectNode c = envelope(id, object, created);
        ObjectNode choice = c.putArray("choices").addObject().put("index", 0);
        if (!last) choice.putNull("finish_reason");
        return c;
    }

    private ObjectNode envelope(String id, String object, long created) {
        return JSON.createObjectNode().put("id", id).put("object", object).put("created", created).put("model", modelId);
    }

    private static void event(OutputStream out, JsonNode data) throws IOException {
        out.write(("data: " + JSON.writeValueAsString(data) + "\n\n").getBytes(StandardCharsets.UTF_8));
        out.flush();
    }

    private static void failed(GenerationSession s) {
        if (s.finishReason() == GenerationSession.FinishReason.ERROR)
            throw new ApiError(500, "generation failed: " + s.error(), "server_error", null, null);
        if (s.finishReason() == GenerationSession.FinishReason.CANCELLED)
            throw new ApiError(503, "generation cancelled: the server is shutting down", "server_error", null, null);
    }

    static String finishReason(GenerationSession.FinishReason r) {
        return switch (r) {
            case EOS, STOP -> "stop";
            case LENGTH, POSITIONS -> "length";
            case CANCELLED, ERROR -> "error";
        };
    }

    // ---------------------------------------------------------------- responses

    private static void sendError(HttpExchange ex, ApiError e) throws IOException {
        ObjectNode body = JSON.createObjectNode();
        ObjectNode err = body.putObject("error").put("message", e.getMessage()).put("type", e.type());
        if (e.param() == null) err.putNull("param");
        else err.put("param", e.param());
        if (e.code() == null) err.putNull("code");
        else err.put("code", e.code());
        sendJson(ex, e.status(), body);
    }

    private static void sendJson(HttpExchange ex, int status, JsonNode body) throws IOException {
        byte[] bytes = JSON.writeValueAsBytes(body);
        ex.getResponseHeaders().set("Content-Type", "application/json");
        ex.sendResponseHeaders(status, bytes.length);
        try (OutputStream out = ex.getResponseBody()) {
            out.write(bytes);
        }
    }
}
