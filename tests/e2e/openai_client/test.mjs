// `lingua serve` through the official openai npm client: models, completions, chat, streaming,
// and errors surfacing as the client's typed exceptions.
//   LINGUA_BASE_URL  e.g. http://127.0.0.1:8080/v1 (required)
//   LINGUA_EXPECTED  ../shared/expected/stories260K-greedy.json: greedy completions must equal its texts
//   LINGUA_API_KEY   the server's --api-key (then a wrong key must give AuthenticationError)
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import OpenAI from "openai";

const baseURL = process.env.LINGUA_BASE_URL;
if (!baseURL) {
  console.error("set LINGUA_BASE_URL (e.g. http://127.0.0.1:8080/v1)");
  process.exit(2);
}
const apiKey = process.env.LINGUA_API_KEY || "none";
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 120000 });

async function check(name, fn) {
  await fn();
  console.log(`ok - ${name}`);
}

const models = await client.models.list();
const ids = models.data.map((m) => m.id);
assert.equal(ids.length, 1);
const model = ids[0];
console.log(`ok - models.list: ${model}`);

const cases = process.env.LINGUA_EXPECTED ? JSON.parse(readFileSync(process.env.LINGUA_EXPECTED, "utf8")) : [];
for (const c of cases) {
  await check(`completion "${c.prompt}" equals the expected text`, async () => {
    const r = await client.completions.create({ model, prompt: c.prompt, max_tokens: c.n_predict, temperature: 0 });
    assert.equal(r.object, "text_completion");
    assert.equal(r.choices.length, 1);
    assert.equal(r.choices[0].text, c.text);
    assert.equal(r.choices[0].finish_reason, "length");
    assert.equal(r.usage.prompt_tokens, c.prompt_tokens.length);
    assert.equal(r.usage.completion_tokens, c.tokens.length);
  });
  await check(`streamed completion "${c.prompt}" equals the expected text`, async () => {
    const stream = await client.completions.create({
      model, prompt: c.prompt, max_tokens: c.n_predict, temperature: 0, stream: true,
    });
    let text = "";
    let chunks = 0;
    let finish = null;
    for await (const chunk of stream) {
      chunks++;
      text += chunk.choices[0]?.text ?? "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    assert.ok(chunks >= 2, `only ${chunks} chunks`);  // text (pieces may arrive together) and the finish
    assert.equal(text, c.text);
    assert.equal(finish, "length");
  });
}

const messages = [
  { role: "system", content: "You tell short stories." },
  { role: "user", content: "Tell me about a dog." },
];
let chatText = "";
await check("chat completion", async () => {
  const r = await client.chat.completions.create({ model, messages, max_tokens: 24, temperature: 0, seed: 7 });
  assert.equal(r.object, "chat.completion");
  assert.equal(r.choices[0].message.role, "assistant");
  assert.equal(typeof r.choices[0].message.content, "string");
  assert.ok(["stop", "length"].includes(r.choices[0].finish_reason));
  assert.ok(r.usage.prompt_tokens > 0);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  chatText = r.choices[0].message.content;
});
await check("streamed chat completion equals the plain one, with usage", async () => {
  const stream = await client.chat.completions.create({
    model, messages, max_tokens: 24, temperature: 0, seed: 7, stream: true, stream_options: { include_usage: true },
  });
  let text = "";
  let role = null;
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    const delta = chunk.choices[0]?.delta;
    if (delta?.role) role = delta.role;
    text += delta?.content ?? "";
  }
  assert.equal(role, "assistant");
  assert.equal(text, chatText);
  assert.ok(usage && usage.completion_tokens > 0);
});
await check("sampling with a seed is reproducible", async () => {
  const ask = () => client.completions.create({ model, prompt: "The cat", max_tokens: 20, temperature: 0.9, top_p: 0.9, seed: 123 });
  const [a, b] = await Promise.all([ask(), ask()]);
  assert.equal(a.choices[0].text, b.choices[0].text);
});
await check("invalid requests raise BadRequestError (400)", async () => {
  await assert.rejects(client.completions.create({ model, prompt: "x", n: 2 }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, String(e));
    assert.equal(e.status, 400);
    assert.match(e.message, /n = 1/);
    return true;
  });
});
await check("an unknown model raises NotFoundError (404)", async () => {
  await assert.rejects(client.completions.create({ model: "no-such-model", prompt: "x" }), OpenAI.NotFoundError);
});
if (process.env.LINGUA_API_KEY) {
  await check("a wrong API key raises AuthenticationError (401)", async () => {
    const wrong = new OpenAI({ baseURL, apiKey: "wrong", maxRetries: 0 });
    await assert.rejects(wrong.models.list(), OpenAI.AuthenticationError);
  });
}
console.log("all openai client checks passed");
