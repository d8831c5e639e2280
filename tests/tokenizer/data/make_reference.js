// Regenerates tests/tokenizer/data/kjv-bpe/: a small Llama-3-style byte-level BPE tokenizer and
// its reference outputs, computed by HuggingFace's own Rust `tokenizers` (npm binding
// @anush008/tokenizers, which wraps tokenizers 0.22). Development tool only: the C++ tests read
// the committed outputs and need none of this.
//
//   npm install @anush008/tokenizers @anush008/tokenizers-linux-x64-gnu
//   node tests/tokenizer/data/make_reference.js <repo root>
const fs = require("fs");
const os = require("os");
const path = require("path");
const { Tokenizer } = require("@anush008/tokenizers");

const root = process.argv[2] || ".";
const out = path.join(root, "tests/tokenizer/data/kjv-bpe");
const LLAMA3_PATTERN = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|" +
  " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const N_MERGES = 1500;
const SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
  "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"];

// GPT-2's byte -> printable character table, in byte order.
function byteAlphabet() {
  const bs = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) if (!bs.includes(b)) { bs.push(b); cs.push(256 + n); n++; }
  const table = new Array(256);
  bs.forEach((b, i) => { table[b] = String.fromCodePoint(cs[i]); });
  return table;
}

function pipeline(model) {
  return {
    version: "1.0", truncation: null, padding: null, added_tokens: [], normalizer: null,
    pre_tokenizer: { type: "Sequence", pretokenizers: [
      { type: "Split", pattern: { Regex: LLAMA3_PATTERN }, behavior: "Isolated", invert: false },
      { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false }] },
    post_processor: null,
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model,
  };
}

async function main() {
  // Train on a slice of the KJV chapters plus some non-Latin lines.
  const lines = fs.readFileSync(path.join(root, "tools/train/data/chapters.jsonl"), "utf8")
    .split("\n").filter((l) => l).slice(0, 60).map((l) => JSON.parse(l).text);
  lines.push("naïve café résumé façade Ångström Żółć über straße 中文分词测试，这是一个句子。" +
    " 日本語のテキスト 한국어 텍스트입니다 مرحبا بالعالم emoji 😀 👍\ndef f(x):\n    return x**2");
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "kjv-bpe-"));
  const corpus = path.join(tmp, "corpus.txt");
  fs.writeFileSync(corpus, lines.join("\n"));
  const empty = { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null,
    end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false,
    vocab: {}, merges: [] };
  const trainer = Tokenizer.fromString(JSON.stringify(pipeline(empty)));
  trainer.train([corpus]);
  const savedPath = path.join(tmp, "trained.json");
  trainer.save(savedPath, false);
  const model = JSON.parse(fs.readFileSync(savedPath, "utf8")).model;

  // Keep the first N merges; the vocabulary is the byte alphabet plus what they make.
  const alphabet = byteAlphabet();
  const vocab = {};
  let next = 0;
  for (const c of alphabet) vocab[c] = next++;
  const merges = [];
  for (const m of model.merges) {
    if (merges.length === N_MERGES) break;
    const [a, b] = Array.isArray(m) ? m : m.split(" ");
    if (!(a in vocab) || !(b in vocab)) continue;
    merges.push([a, b]);
    if (!((a + b) in vocab)) vocab[a + b] = next++;
  }
  // A whole-word token that no merge builds: only ignore_merges can produce it.
  vocab["Ġfirmamentally"] = next++;
  const bpe = { ...empty, ignore_merges: true, vocab, merges };
  const doc = pipeline(bpe);
  doc.added_tokens = SPECIALS.map((s, i) => ({ id: next + i, content: s, single_word: false,
    lstrip: false, rstrip: false, normalized: false, special: true }));
  const bos = next;
  doc.post_processor = { type: "Sequence", processors: [
    { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
    { type: "TemplateProcessing",
      single: [{ SpecialToken: { id: SPECIALS[0], type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [{ SpecialToken: { id: SPECIALS[0], type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: SPECIALS[0], type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } }],
      special_tokens: { [SPECIALS[0]]: { id: SPECIALS[0], ids: [bos], tokens: [SPECIALS[0]] } } }] };
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, "tokenizer.json"), JSON.stringify(doc, null, 1) + "\n");
  fs.writeFileSync(path.join(out, "tokenizer_config.json"), JSON.stringify({
    bos_token: SPECIALS[0], eos_token: SPECIALS[1], clean_up_tokenization_spaces: false,
    chat_template: "{{ bos_token }}{% for m in messages %}{{ m['content'] }}<|eot_id|>{% endfor %}",
    tokenizer_class: "PreTrainedTokenizerFast" }, null, 2) + "\n");

  const tok = Tokenizer.fromFile(path.join(out, "tokenizer.json"));
  const texts = JSON.parse(fs.readFileSync(path.join(__dirname, "case_texts.json"), "utf8"));
  const cases = [];
  for (const text of texts) {
    const ids = (await tok.encode(text, null, { addSpecialTokens: false })).getIds();
    const withSpecial = (await tok.encode(text, null, { addSpecialTokens: true })).getIds();
    const decoded = await tok.decode(ids, false);
    const decodedSkip = await tok.decode(withSpecial, true);
    cases.push({ text, ids, ids_with_special: withSpecial, decoded, decoded_skip_special: decodedSkip });
  }
  // Arbitrary id sequences (incomplete UTF-8, specials mid-character) and how they decode.
  let seed = 12345;
  const rand = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
  const vocabSize = next + SPECIALS.length;
  const random = [];
  for (let i = 0; i < 200; i++) {
    const len = 1 + rand(12);
    const ids = [];
    for (let j = 0; j < len; j++) ids.push(rand(10) < 6 ? rand(256) : rand(vocabSize));
    random.push({ ids, decoded: await tok.decode(ids, false), decoded_skip_special: await tok.decode(ids, true) });
  }
  fs.writeFileSync(path.join(out, "tokenizer_cases.json"), JSON.stringify(cases, null, 1) + "\n");
  fs.writeFileSync(path.join(out, "decode_cases.json"), JSON.stringify(random) + "\n");
  fs.rmSync(tmp, { recursive: true });
  console.log(`kjv-bpe: ${Object.keys(vocab).length} vocab, ${merges.length} merges, ` +
    `${cases.length} text cases, ${random.length} decode cases`);
}
main().catch((e) => { console.error(e); process.exit(1); });
