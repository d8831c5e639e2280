// The official OpenAI Node client (npm package `openai`) against the gateway: lists the models,
// streams a chat completion (stream_options.include_usage), makes a non-streamed completion
// with n=2, and gets an OpenAI-shaped error back as an APIError. Prints one JSON object with
// what it saw; tests/gateway/gateway_e2e.py checks it.
//   NODE_PATH=<folder with node_modules/openai> node openai_client.cjs http://127.0.0.1:PORT/v1 MODEL
const fs = require('fs');
const path = require('path');
const OpenAI = require('openai');

function openaiVersion() {
  try {
    const dir = path.dirname(require.resolve('openai'));
    return JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).version;
  } catch (e) {
    return null;
  }
}

async function main() {
  const [baseURL, model] = process.argv.slice(2);
  const client = new OpenAI({ baseURL, apiKey: 'not-needed', maxRetries: 0, timeout: 60000 });
  const out = { version: openaiVersion() };

  const models = await client.models.list();
  out.models = models.data.map((m) => m.id);

  const stream = await client.chat.completions.create({
    model,
    messages: [
      { role: 'system', content: 'You are terse.' },
      { role: 'user', content: 'Who created the heaven and the earth?' },
    ],
    max_tokens: 24,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  });
  out.chunks = 0;
  out.text = '';
  out.role = null;
  for await (const chunk of stream) {
    out.chunks += 1;
    out.id = chunk.id;
    out.object = chunk.object;
    if (chunk.usage) out.usage = chunk.usage;
    for (const choice of chunk.choices) {
      if (choice.delta.role) out.role = choice.delta.role;
      if (choice.delta.content) out.text += choice.delta.content;
      if (choice.finish_reason) out.finish_reason = choice.finish_reason;
    }
  }

  const completion = await client.completions.create({
    model, prompt: 'In the beginning', max_tokens: 8, n: 2, seed: 7, temperature: 1,
  });
  out.completion = {
    choices: completion.choices.map((c) => ({ index: c.index, text: c.text, finish_reason: c.finish_reason })),
    usage: completion.usage,
  };

  try {
    await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'hi' }], temperature: 7 });
    out.error = null;
  } catch (e) {
    out.error = { status: e.status, type: e.type, param: e.param, code: e.code, message: e.message };
  }
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error('openai client failed:', e);
  process.exit(1);
});
