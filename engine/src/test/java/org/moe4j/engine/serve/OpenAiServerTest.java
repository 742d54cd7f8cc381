package org.moe4j.engine.serve;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.moe4j.engine.config.LossWeights;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.config.RoutingConfig;
import org.moe4j.engine.inference.Generator;
import org.moe4j.engine.inference.InferenceModel;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.io.tokenizer.BpeTokenizer;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.WorkerPool;

/**
 * The OpenAI endpoint in-process on a random tiny MoE with a small trained BPE, over loopback HTTP: completions
 * (greedy is reproducible; streamed deltas concatenate to the non-streamed text), chat, models, health, concurrent
 * requests, and every refused request answered with its 4xx and an OpenAI-style error body.
 */
class OpenAiServerTest {
    static final ObjectMapper JSON = new ObjectMapper();
    static final int VOCAB = 320, POSITIONS = 64;
    static WorkerPool pool;
    static MoeModel weights;
    static InferenceModel model, bare;
    static OpenAiServer server, bareServer;
    static HttpClient client;

    @BeforeAll
    static void start() {
        List<String> texts = List.of("the quick brown fox jumps over the lazy dog", "hello world, hello moe4j",
                "user: hi\nassistant: hello there", "experts route tokens to the few that fit");
        BpeTokenizer tok = BpeTokenizer.train(texts, VOCAB, null, null);
        ModelConfig c = new ModelConfig(VOCAB, 16, 2, 2, 1, 6, 1, 3, 8, 10000.0, false, 1e-6, POSITIONS, tok.eosId(),
                RoutingConfig.standard(), LossWeights.defaults());
        weights = new MoeModel(c, false).initRandom(7);
        pool = new WorkerPool(2);
        Generator.Options o = Generator.Options.defaults(new JavaGemm(pool), pool).withSlots(4);
        model = InferenceModel.of(weights, tok, false);
        bare = InferenceModel.of(weights, null, false);
        server = OpenAiServer.start(model, o, "tiny", "127.0.0.1", 0);
        bareServer = OpenAiServer.start(bare, o, "bare", "127.0.0.1", 0);
        client = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
    }

    @AfterAll
    static void stop() {
        if (server != null) server.close();
        if (bareServer != null) bareServer.close();
        if (model != null) model.close();
        if (bare != null) bare.close();
        if (weights != null) weights.close();
        if (pool != null) pool.close();
    }

    record Reply(int status, JsonNode body, String raw) {
    }

    static Reply send(OpenAiServer s, String method, String path, String body) throws Exception {
        HttpRequest.Builder b = HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + s.port() + path))
                .timeout(Duration.ofSeconds(30));
        b.method(method, body == null ? HttpRequest.BodyPublishers.noBody() : HttpRequest.BodyPublishers.ofString(body));
        if (body != null) b.header("Content-Type", "application/json");
        HttpResponse<String> r = client.send(b.build(), HttpResponse.BodyHandlers.ofString());
        JsonNode json = null;
        if (r.headers().firstValue("Content-Type").orElse("").startsWith("application/json")) json = JSON.readTree(r.body());
        return new Reply(r.statusCode(), json, r.body());
    }

    static JsonNode post(String path, String body) throws Exception {
        Reply r = send(server, "POST", path, body);
        assertEquals(200, r.status(), r.raw());
        return r.body();
    }

    /** The JSON payloads of a server-sent-event stream, checking it ends with [DONE]. */
    static List<JsonNode> events(String path, String body) throws Exception {
        HttpRequest req = HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + server.port() + path))
                .timeout(Duration.ofSeconds(30)).POST(HttpRequest.BodyPublishers.ofString(body)).build();
        HttpResponse<java.util.stream.Stream<String>> r = client.send(req, HttpResponse.BodyHandlers.ofLines());
        assertEquals(200, r.statusCode());
        assertTrue(r.headers().firstValue("Content-Type").orElse("").startsWith("text/event-stream"));
        List<String> data = new ArrayList<>();
        r.body().forEach(line -> {
            if (line.startsWith("data: ")) data.add(line.substring(6));
            else assertTrue(line.isEmpty(), "unexpected SSE line '" + line + "'");
        });
        assertFalse(data.isEmpty());
        assertEquals("[DONE]", data.getLast());
        List<JsonNode> out = new ArrayList<>();
        for (String d : data.subList(0, data.size() - 1)) out.add(JSON.readTree(d));
        return out;
    }

    static final String PROMPT = "{\"prompt\": \"hello world\", \"max_tokens\": 12, \"temperature\": 0";

    @Test
    void greedyCompletionIsReproducibleAndWellFormed() throws Exception {
        JsonNode a = post("/v1/completions", PROMPT + "}");
        JsonNode b = post("/v1/completions", PROMPT + "}");
        assertEquals("text_completion", a.get("object").asText());
        assertEquals("tiny", a.get("model").asText());
        assertTrue(a.get("id").asText().startsWith("cmpl-"));
        JsonNode ch = a.get("choices").get(0);
        assertEquals(0, ch.get("index").asInt());
        assertEquals(ch.get("text").asText(), b.get("choices").get(0).get("text").asText());
        assertEquals(ch.get("token_ids"), b.get("choices").get(0).get("token_ids"));
        JsonNode u = a.get("usage");
        int prompt = model.tokenizer().encode("hello world").length;
        assertEquals(prompt, u.get("prompt_tokens").asInt());
        int n = u.get("completion_tokens").asInt();
        assertEquals(ch.get("token_ids").size(), n);
        assertEquals(prompt + n, u.get("total_tokens").asInt());
        String reason = ch.get("finish_reason").asText();
        assertTrue(reason.equals("length") ? n == 12 : reason.equals("stop") && n < 12, reason + " after " + n);
        // the text is the decoded ids (cut only where a character is incomplete)
        int[] ids = new int[n];
        for (int i = 0; i < n; i++) ids[i] = ch.get("token_ids").get(i).asInt();
        assertTrue(model.tokenizer().decode(ids).startsWith(ch.get("text").asText()));
    }

    @Test
    void tokenIdPromptEqualsStringPrompt() throws Exception {
        int[] ids = model.tokenizer().encode("hello world");
        JsonNode a = post("/v1/completions", PROMPT + "}");
        JsonNode b = post("/v1/completions", "{\"prompt\": " + java.util.Arrays.toString(ids)
                + ", \"max_tokens\": 12, \"temperature\": 0}");
        assertEquals(a.get("choices").get(0).get("token_ids"), b.get("choices").get(0).get("token_ids"));
    }

    @Test
    void seededSamplingIsReproducible() throws Exception {
        String q = "{\"prompt\": \"the quick\", \"max_tokens\": 10, \"temperature\": 0.9, \"top_p\": 0.95, \"top_k\": 40, \"seed\": 5}";
        assertEquals(post("/v1/completions", q).get("choices").get(0).get("token_ids"),
                post("/v1/completions", q).get("choices").get(0).get("token_ids"));
    }

    @Test
    void stopStringCutsTheText() throws Exception {
        JsonNode full = post("/v1/completions", PROMPT + "}").get("choices").get(0);
        String text = full.get("text").asText();
        assertTrue(text.length() >= 2, "the seeded model should write some text: '" + text + "'");
        String stop = text.substring(text.length() / 2, text.length() / 2 + 1);
        JsonNode cut = post("/v1/completions", PROMPT + ", \"stop\": [" + JSON.writeValueAsString(stop) + "]}")
                .get("choices").get(0);
        assertEquals(text.substring(0, text.indexOf(stop)), cut.get("text").asText());
        assertEquals("stop", cut.get("finish_reason").asText());
    }

    @Test
    void streamedDeltasConcatenateToTheGreedyText() throws Exception {
        JsonNode whole = post("/v1/completions", PROMPT + "}").get("choices").get(0);
        List<JsonNode> ev = events("/v1/completions", PROMPT + ", \"stream\": true}");
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < ev.size(); i++) {
            JsonNode ch = ev.get(i).get("choices").get(0);
            assertEquals("text_completion", ev.get(i).get("object").asText());
            sb.append(ch.get("text").asText());
            if (i < ev.size() - 1) assertTrue(ch.get("finish_reason").isNull());
            else assertEquals(whole.get("finish_reason").asText(), ch.get("finish_reason").asText());
        }
        assertEquals(whole.get("text").asText(), sb.toString());
        assertEquals(whole.get("token_ids").size() + 1, ev.size()); // one chunk per token, then the finish chunk
    }

    static final String CHAT = "{\"messages\": [{\"role\": \"system\", \"content\": \"be brief\"}, "
            + "{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 10, \"temperature\": 0";

    @Test
    void chatCompletionAndItsStream() throws Exception {
        JsonNode a = post("/v1/chat/completions", CHAT + "}");
        assertEquals("chat.completion", a.get("object").asText());
        JsonNode msg = a.get("choices").get(0).get("message");
        assertEquals("assistant", msg.get("role").asText());
        int prompt = model.tokenizer().encode("system: be brief\nuser: hi\nassistant: ").length;
        assertEquals(prompt, a.get("usage").get("prompt_tokens").asInt());
        List<JsonNode> ev = events("/v1/chat/completions", CHAT + ", \"stream\": true}");
        assertEquals("assistant", ev.getFirst().get("choices").get(0).get("delta").get("role").asText());
        StringBuilder sb = new StringBuilder();
        for (JsonNode e : ev) {
            assertEquals("chat.completion.chunk", e.get("object").asText());
            JsonNode content = e.get("choices").get(0).get("delta").get("content");
            if (content != null) sb.append(content.asText());
        }
        assertEquals(msg.get("content").asText(), sb.toString());
        assertEquals(a.get("choices").get(0).get("finish_reason").asText(),
                ev.getLast().get("choices").get(0).get("finish_reason").asText());
    }

    @Test
    void modelsAndHealth() throws Exception {
        Reply m = send(server, "GET", "/v1/models", null);
        assertEquals(200, m.status());
        assertEquals("list", m.body().get("object").asText());
        assertEquals(1, m.body().get("data").size());
        assertEquals("tiny", m.body().get("data").get(0).get("id").asText());
        Reply h = send(server, "GET", "/health", null);
        assertEquals(200, h.status());
        assertEquals("ok", h.body().get("status").asText());
    }

    @Test
    void concurrentRequestsAreAllAnswered() throws Exception {
        String[] prompts = {"hello world", "the quick brown", "experts route", "lazy dog", "hello moe4j", "tokens"};
        List<String> want = new ArrayList<>();
        for (String p : prompts)
            want.add(post("/v1/completions", "{\"prompt\": \"" + p + "\", \"max_tokens\": 8, \"temperature\": 0}")
                    .get("choices").get(0).get("token_ids").toString());
        try (ExecutorService ex = Executors.newFixedThreadPool(4)) {
            List<Future<String>> got = new ArrayList<>();
            for (int round = 0; round < 2; round++)
                for (String p : prompts)
                    got.add(ex.submit(() -> post("/v1/completions", "{\"prompt\": \"" + p
                            + "\", \"max_tokens\": 8, \"temperature\": 0}").get("choices").get(0).get("token_ids").toString()));
            // greedy output does not depend on what else is in the batch
            for (int i = 0; i < got.size(); i++) assertEquals(want.get(i % prompts.length), got.get(i).get());
        }
    }

    static void assertError(OpenAiServer s, String method, String path, String body, int status, String param,
                            String mentions) throws Exception {
        Reply r = send(s, method, path, body);
        assertEquals(status, r.status(), r.raw());
        JsonNode e = r.body().get("error");
        assertTrue(e.get("message").asText().contains(mentions), e.get("message").asText());
        assertTrue(e.has("type") && e.has("param") && e.has("code"), r.raw());
        if (param != null) assertEquals(param, e.get("param").asText());
    }

    @Test
    void badRequestsGetOpenAiErrors() throws Exception {
        String c = "/v1/completions";
        assertError(server, "POST", c, "{not json", 400, null, "not valid JSON");
        assertError(server, "POST", c, "", 400, null, "empty");
        assertError(server, "POST", c, "[1, 2]", 400, null, "JSON object");
        assertError(server, "POST", c, "{\"max_tokens\": 3}", 400, "prompt", "missing");
        assertError(server, "POST", c, "{\"prompt\": [5, " + VOCAB + "]}", 400, "prompt", "outside the vocabulary");
        assertError(server, "POST", c, "{\"prompt\": [5, -1]}", 400, "prompt", "outside the vocabulary");
        assertError(server, "POST", c, "{\"prompt\": [5, \"x\"]}", 400, "prompt", "token ids");
        assertError(server, "POST", c, "{\"prompt\": []}", 400, "prompt", "no tokens");
        assertError(server, "POST", c, "{\"prompt\": \"hi\", \"max_tokens\": -1}", 400, "max_tokens", ">= 0");
        assertError(server, "POST", c, "{\"prompt\": \"hi\", \"max_tokens\": " + POSITIONS + "}", 400, "max_tokens",
                "beyond the model's positions");
        assertError(server, "POST", c, "{\"prompt\": \"hi\", \"temperature\": -0.5}", 400, "temperature", ">= 0");
        assertError(server, "POST", c, "{\"prompt\": \"hi\", \"top_p\": 0}", 400, "top_p", "(0, 1]");
        assertError(server, "POST", c, "{\"prompt\": \"hi\", \"stream\": \"yes\"}", 400, "stream", "true or false");
        assertError(server, "POST", c, "{\"prompt\": \"hi\", \"stop\": [\"\"]}", 400, "stop", "empty");
        assertError(server, "POST", c, "{\"prompt\": \"hi\", \"n\": 2}", 400, "n", "one choice");
        int[] tooLong = new int[POSITIONS];
        java.util.Arrays.fill(tooLong, 5);
        Reply r = send(server, "POST", c, "{\"prompt\": " + java.util.Arrays.toString(tooLong) + "}");
        assertEquals(400, r.status());
        assertEquals("context_length_exceeded", r.body().get("error").get("code").asText());
        assertError(server, "POST", "/v1/chat/completions", "{\"messages\": []}", 400, "messages", "non-empty");
        assertError(server, "POST", "/v1/chat/completions", "{\"messages\": [{\"role\": \"user\"}]}", 400, "messages",
                "content");
        assertError(server, "GET", "/v1/nothing", null, 404, null, "unknown route");
        assertError(server, "GET", c, null, 405, null, "takes POST");
        assertError(server, "POST", "/health", "{}", 405, null, "takes GET");
        // the server is still serving after all of these
        assertEquals(200, send(server, "GET", "/health", null).status());
    }

    @Test
    void withoutATokenizerOnlyTokenIdsWork() throws Exception {
        assertError(bareServer, "POST", "/v1/completions", "{\"prompt\": \"hello\"}", 400, "prompt", "tokenizer.json");
        assertError(bareServer, "POST", "/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}",
                400, "messages", "tokenizer.json");
        int[] ids = model.tokenizer().encode("hello world");
        Reply r = send(bareServer, "POST", "/v1/completions", "{\"prompt\": " + java.util.Arrays.toString(ids)
                + ", \"max_tokens\": 12, \"temperature\": 0}");
        assertEquals(200, r.status(), r.raw());
        assertEquals("", r.body().get("choices").get(0).get("text").asText());
        // the same weights give the same ids as the server with the tokenizer
        assertEquals(post("/v1/completions", PROMPT + "}").get("choices").get(0).get("token_ids"),
                r.body().get("choices").get(0).get("token_ids"));
    }
}
