#include "model/tokenizer/bpe_tokenizer.h"

#include <algorithm>

#include "common/error.h"
#include "model/tokenizer/byte_level_alphabet.h"
#include "model/tokenizer/json_access.h"
#include "model/tokenizer/utf8.h"

namespace shardserve::model {
namespace {

// The split HF's ByteLevel pre-tokenizer applies when use_regex is true (GPT-2's pattern).
constexpr const char* kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

std::string type_of(const JsonPath& component) { return component["type"].string(); }

std::string escape_regex(std::string_view literal) {
  std::string out;
  for (const char c : literal) {
    if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos) out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

void require_null_or(const JsonPath& parent, std::string_view key, const nlohmann::json& allowed,
                     std::string_view why) {
  if (!parent.has(key)) return;
  const JsonPath v = parent[key];
  require(v.is_null() || v.value() == allowed, "{}: {} is not supported ({})", v.where(), v.show(),
          why);
}

}  // namespace

bool BpeTokenizer::is_byte_level(const nlohmann::json& json) {
  // Only a quick look: malformed parts are left for the constructor to report.
  const auto has_type = [](const nlohmann::json& j, std::string_view type) {
    return j.is_object() && j.contains("type") && j["type"].is_string() &&
           j["type"].get_ref<const std::string&>() == type;
  };
  if (!json.is_object() || !json.contains("pre_tokenizer")) return false;
  const nlohmann::json& pre = json["pre_tokenizer"];
  if (has_type(pre, "Sequence") && pre.contains("pretokenizers") &&
      pre["pretokenizers"].is_array() && !pre["pretokenizers"].empty()) {
    return has_type(pre["pretokenizers"].back(), "ByteLevel");
  }
  return has_type(pre, "ByteLevel");
}

std::unique_ptr<BpeTokenizer> BpeTokenizer::load(const std::filesystem::path& tokenizer_json,
                                                 TokenizerConfig config) {
  const nlohmann::json json = read_json_file(tokenizer_json);
  return std::make_unique<BpeTokenizer>(json, tokenizer_json.string(), std::move(config));
}

BpeTokenizer::BpeTokenizer(const nlohmann::json& json, const std::string& file,
                           TokenizerConfig config)
    : config_(std::move(config)) {
  const JsonPath root(file, json);
  root.object();
  // Truncation and padding would change what encode() returns; the server does neither here.
  require_null_or(root, "truncation", nullptr, "encode would truncate");
  require_null_or(root, "padding", nullptr, "encode would pad");

  if (root.has("normalizer") && !root["normalizer"].is_null()) {
    const JsonPath n = root["normalizer"];
    const bool empty_sequence = type_of(n) == "Sequence" && n["normalizers"].array().empty();
    require(empty_sequence, "{}: normalizer type {:?} is not supported (byte-level BPE "
            "tokenizers have none)", n.where(), type_of(n));
  }

  // ---- pre_tokenizer: Split(Regex, Isolated)* then ByteLevel.
  {
    const JsonPath pre = root["pre_tokenizer"];
    require(!pre.is_null(), "{}: a pre_tokenizer ending in ByteLevel is required", pre.where());
    std::vector<JsonPath> steps;
    if (type_of(pre) == "Sequence") {
      const JsonPath list = pre["pretokenizers"];
      for (size_t i = 0; i < list.array().size(); ++i) steps.push_back(list[i]);
    } else {
      steps.push_back(pre);
    }
    require(!steps.empty() && type_of(steps.back()) == "ByteLevel",
            "{}: the pre-tokenizer must end in ByteLevel, found {}", pre.where(), pre.show());
    for (size_t i = 0; i + 1 < steps.size(); ++i) {
      const JsonPath& step = steps[i];
      const std::string type = type_of(step);
      require(type == "Split", "{}: pre-tokenizer type {:?} is not supported (only Split and a "
              "final ByteLevel)", step["type"].where(), type);
      const JsonPath behavior = step["behavior"];
      require(behavior.string() == "Isolated", "{}: Split behavior {:?} is not supported (only "
              "\"Isolated\")", behavior.where(), behavior.string());
      if (step.boolean_or("invert", false)) {
        fail("{}: Split invert=true is not supported", step["invert"].where());
      }
      const JsonPath pattern = step["pattern"];
      std::string regex;
      if (pattern.has("Regex")) {
        regex = pattern["Regex"].string();
      } else if (pattern.has("String")) {
        regex = escape_regex(pattern["String"].string());
      } else {
        fail("{}: expected {{\"Regex\": ...}} or {{\"String\": ...}}, found {}", pattern.where(),
             pattern.show());
      }
      splits_.emplace_back(regex, pattern.where());
    }
    const JsonPath& byte_level = steps.back();
    add_prefix_space_ = byte_level.boolean_or("add_prefix_space", false);
    if (byte_level.boolean_or("use_regex", true)) {
      byte_level_regex_ = std::make_unique<RegexSplitter>(kGpt2Pattern, byte_level.where());
    }
  }

  // ---- model: BPE.
  const JsonPath model = root["model"];
  {
    const std::string type = model.has("type") ? type_of(model) : "";
    require(type == "BPE", "{}: model type {:?} is not supported (only \"BPE\")",
            model.where(), type);
  }
  if (model.has("dropout") && !model["dropout"].is_null()) {
    const JsonPath dropout = model["dropout"];
    require(dropout.value().is_number() && dropout.value().get<double>() == 0.0,
            "{}: BPE dropout {} is not supported (it makes encoding random)", dropout.where(),
            dropout.show());
  }
  require_null_or(model, "continuing_subword_prefix", "", "byte-level BPE has no subword prefix");
  require_null_or(model, "end_of_word_suffix", "", "byte-level BPE has no end-of-word suffix");

  // The loops below run over every vocabulary entry and merge (hundreds of thousands for
  // Llama 3), so they build error paths only when something is wrong.
  const JsonPath vocab = model["vocab"];
  const ByteLevelAlphabet alphabet;
  StringIdMap raw_vocab;      // raw bytes -> id, for the tokens BPE can produce
  StringIdMap spelled_vocab;  // spelling -> id
  const auto token_slot = [&](int64_t id, const auto& where) -> Token& {
    if (id < 0 || id >= (1 << 30)) fail("{}: id {} is out of range", where(), id);
    if (id >= static_cast<int64_t>(tokens_.size())) tokens_.resize(static_cast<size_t>(id) + 1);
    return tokens_[static_cast<size_t>(id)];
  };
  for (const auto& [spelling, id_json] : vocab.object().items()) {
    // (An init-capture: clang 14, the fuzz build's compiler, cannot capture a structured binding.)
    const auto where = [&vocab, &name = spelling] { return vocab[name].where(); };
    if (!id_json.is_number_integer()) vocab[spelling].integer();  // fails with the message
    const auto id = id_json.get<int64_t>();
    Token& t = token_slot(id, where);
    if (t.present) fail("{}: id {} is also given to {:?}", where(), id, t.spelling);
    const std::optional<std::string> bytes = alphabet.to_bytes(spelling);
    t.spelling = spelling;
    // The ByteLevel decoder maps a token all of whose characters are in the alphabet to the
    // bytes they stand for, and any other token to its own UTF-8.
    t.bytes = bytes ? *bytes : spelling;
    t.present = true;
    spelled_vocab.emplace(spelling, static_cast<int32_t>(id));
    if (bytes) raw_vocab.emplace(*bytes, static_cast<int32_t>(id));
  }

  std::vector<std::pair<std::string, std::string>> merges;
  {
    const JsonPath list = model["merges"];
    const nlohmann::json& items = list.array();
    merges.reserve(items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      const nlohmann::json& m = items[i];
      const auto where = [&] { return list[i].where(); };
      const auto show = [&] { return list[i].show(); };
      std::string left;
      std::string right;
      if (m.is_string()) {
        const auto& s = m.get_ref<const std::string&>();
        if (s.starts_with("#version")) continue;
        const size_t space = s.find(' ');
        if (space == std::string::npos || space == 0 || space + 1 == s.size() ||
            s.find(' ', space + 1) != std::string::npos) {
          fail("{}: expected \"left right\" (two tokens, one space), found {}", where(), show());
        }
        left = s.substr(0, space);
        right = s.substr(space + 1);
      } else {
        if (!m.is_array() || m.size() != 2 || !m[0].is_string() || !m[1].is_string()) {
          fail("{}: expected \"left right\" or [left, right], found {}", where(), show());
        }
        left = m[0].get<std::string>();
        right = m[1].get<std::string>();
      }
      std::array<std::string, 3> raw;
      const std::array<std::string, 3> spelled = {left, right, left + right};
      for (size_t k = 0; k < 3; ++k) {
        if (!spelled_vocab.contains(spelled[k])) {
          fail("{}: merge {} needs token {:?}, which is not in model.vocab", where(), show(),
               spelled[k]);
        }
        std::optional<std::string> bytes = alphabet.to_bytes(spelled[k]);
        if (!bytes) {
          fail("{}: merge {} uses {:?}, which is not spelled in the byte-level alphabet", where(),
               show(), spelled[k]);
        }
        raw[k] = std::move(*bytes);
      }
      merges.emplace_back(std::move(raw[0]), std::move(raw[1]));
    }
  }

  BpeOptions options;
  options.ignore_merges = model.boolean_or("ignore_merges", false);
  options.byte_fallback = model.boolean_or("byte_fallback", false);
  options.fuse_unk = model.boolean_or("fuse_unk", false);
  if (model.has("unk_token") && !model["unk_token"].is_null()) {
    const JsonPath unk = model["unk_token"];
    const auto it = spelled_vocab.find(unk.string());
    require(it != spelled_vocab.end(), "{}: unk_token {:?} is not in model.vocab", unk.where(),
            unk.string());
    options.unk_id = it->second;
  }

  // ---- added_tokens.
  std::vector<AddedToken> added;
  if (root.has("added_tokens") && !root["added_tokens"].is_null()) {
    const JsonPath list = root["added_tokens"];
    // HF does not take an added token's id from the file: a token of the model's vocabulary
    // keeps its id, any other gets the next id after the vocabulary and the tokens added
    // before it. A file that says otherwise would be tokenized with other ids than it states.
    int64_t next_id = static_cast<int64_t>(spelled_vocab.size());
    StringIdMap added_ids;
    for (size_t i = 0; i < list.array().size(); ++i) {
      const JsonPath a = list[i];
      AddedToken t;
      t.id = static_cast<int32_t>(a["id"].integer());
      t.content = a["content"].string();
      int64_t expected = 0;
      if (const auto v = spelled_vocab.find(t.content); v != spelled_vocab.end()) {
        expected = v->second;
      } else if (const auto d = added_ids.find(t.content); d != added_ids.end()) {
        expected = d->second;
      } else {
        expected = next_id++;
        added_ids.emplace(t.content, static_cast<int32_t>(expected));
      }
      require(t.id == expected, "{}: added token {:?} has id {}, but HuggingFace gives it id {} "
              "(the model's id for a vocabulary token, else the next id after the vocabulary "
              "and earlier added tokens)", a["id"].where(), t.content, t.id, expected);
      require(!t.content.empty(), "{}: an added token cannot be empty", a["content"].where());
      t.special = a.boolean_or("special", false);
      t.lstrip = a.boolean_or("lstrip", false);
      t.rstrip = a.boolean_or("rstrip", false);
      t.normalized = a.boolean_or("normalized", !t.special);
      require(!a.boolean_or("single_word", false), "{}: single_word=true is not supported "
              "(token {:?})", a.where(), t.content);
      Token& slot = token_slot(t.id, [&] { return a["id"].where(); });
      // HF decodes an added token from its content even when the model has another token there.
      slot.spelling = t.content;
      slot.bytes = alphabet.to_bytes(t.content).value_or(t.content);
      slot.present = true;
      slot.special = t.special;
      added.push_back(t);
    }
  }
  for (const AddedToken& t : added) spelled_ids_.insert_or_assign(t.content, t.id);
  for (const auto& [spelling, id] : spelled_vocab) spelled_ids_.emplace(spelling, id);
  added_ = std::make_unique<AddedVocabulary>(std::move(added));
  model_ = std::make_unique<BpeModel>(std::move(raw_vocab), merges, spelled_vocab, options);

  // ---- post_processor: the tokens encode(add_special_tokens=true) adds.
  if (root.has("post_processor") && !root["post_processor"].is_null()) {
    std::vector<JsonPath> processors;
    const JsonPath pp = root["post_processor"];
    if (type_of(pp) == "Sequence") {
      const JsonPath list = pp["processors"];
      for (size_t i = 0; i < list.array().size(); ++i) processors.push_back(list[i]);
    } else {
      processors.push_back(pp);
    }
    bool have_template = false;
    for (const JsonPath& p : processors) {
      const std::string type = type_of(p);
      if (type == "ByteLevel") continue;  // adjusts offsets only
      require(type == "TemplateProcessing", "{}: post-processor type {:?} is not supported "
              "(only TemplateProcessing and ByteLevel)", p["type"].where(), type);
      require(!have_template, "{}: more than one TemplateProcessing", p.where());
      have_template = true;
      const JsonPath single = p["single"];
      const JsonPath specials = p["special_tokens"];
      bool seen_sequence = false;
      for (size_t i = 0; i < single.array().size(); ++i) {
        const JsonPath item = single[i];
        if (item.has("Sequence")) {
          const std::string which = item["Sequence"]["id"].string();
          require(which == "A" && !seen_sequence, "{}: expected one $A, found {}", item.where(),
                  item.show());
          seen_sequence = true;
          continue;
        }
        const std::string name = item["SpecialToken"]["id"].string();
        const JsonPath special = specials[name];
        const JsonPath ids = special["ids"];
        for (size_t k = 0; k < ids.array().size(); ++k) {
          const int64_t id = ids[k].integer();
          require(id >= 0 && id < static_cast<int64_t>(tokens_.size()) &&
                      tokens_[static_cast<size_t>(id)].present,
                  "{}: id {} has no token", ids[k].where(), id);
          (seen_sequence ? suffix_ids_ : prefix_ids_).push_back(static_cast<int32_t>(id));
        }
      }
      require(seen_sequence, "{}: the template has no $A", single.where());
    }
  }

  // ---- decoder: ByteLevel.
  {
    const JsonPath decoder = root["decoder"];
    require(!decoder.is_null(), "{}: a ByteLevel decoder is required", decoder.where());
    std::string type = type_of(decoder);
    if (type == "Sequence") {
      const JsonPath list = decoder["decoders"];
      require(list.array().size() == 1, "{}: only a lone ByteLevel decoder is supported, found {}",
              list.where(), list.show());
      type = type_of(list[0]);
    }
    require(type == "ByteLevel", "{}: decoder type {:?} is not supported (only \"ByteLevel\")",
            decoder.where(), type);
  }

  // ---- BOS / EOS: tokenizer_config.json names them; else the template's first token is BOS.
  const auto id_of = [&](const std::string& token, const char* what) {
    const auto it = spelled_ids_.find(token);
    require(it != spelled_ids_.end(), "tokenizer_config.json: {} {:?} is not a token of {}", what,
            token, file);
    return it->second;
  };
  if (config_.bos_token) {
    bos_id_ = id_of(*config_.bos_token, "bos_token");
  } else if (!prefix_ids_.empty()) {
    bos_id_ = prefix_ids_.front();
  }
  if (config_.eos_token) eos_ids_.push_back(id_of(*config_.eos_token, "eos_token"));
}

void BpeTokenizer::encode_gap(std::string_view text, size_t step, std::vector<int32_t>& ids) const {
  if (step < splits_.size()) {
    splits_[step].split(text, [&](std::string_view piece) { encode_gap(piece, step + 1, ids); });
    return;
  }
  std::string prefixed;
  if (add_prefix_space_ && !text.starts_with(' ')) {
    prefixed = " ";
    prefixed.append(text);
    text = prefixed;
  }
  if (byte_level_regex_) {
    byte_level_regex_->split(text, [&](std::string_view piece) { model_->encode_piece(piece, ids); });
  } else {
    model_->encode_piece(text, ids);
  }
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, bool add_special_tokens) const {
  if (const auto bad = find_invalid_utf8(text)) {
    fail("cannot tokenize: text is not valid UTF-8 at byte {} of {}", *bad, text.size());
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (add_special_tokens) ids = prefix_ids_;
  added_->split(
      text, [&](std::string_view gap) { encode_gap(gap, 0, ids); },
      [&](int32_t id) { ids.push_back(id); });
  if (add_special_tokens) ids.insert(ids.end(), suffix_ids_.begin(), suffix_ids_.end());
  return ids;
}

std::string BpeTokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::string bytes;
  for (const int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    const Token& t = tokens_[static_cast<size_t>(id)];
    if (!t.present || (skip_special_tokens && t.special)) continue;
    bytes.append(t.bytes);
  }
  std::string text;
  text.reserve(bytes.size());
  repair_utf8(bytes, Utf8Repair::kMaximalSubpart, /*at_end=*/true, text);
  return text;
}

std::optional<TokenText> BpeTokenizer::token_text(int32_t id) const {
  if (id < 0 || id >= vocab_size() || !tokens_[static_cast<size_t>(id)].present) return std::nullopt;
  return TokenText{TokenText::Kind::kBytes, tokens_[static_cast<size_t>(id)].bytes, false};
}

std::optional<int32_t> BpeTokenizer::token_to_id(std::string_view token) const {
  const auto it = spelled_ids_.find(token);
  if (it == spelled_ids_.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string> BpeTokenizer::id_to_token(int32_t id) const {
  if (id < 0 || id >= vocab_size() || !tokens_[static_cast<size_t>(id)].present) return std::nullopt;
  return tokens_[static_cast<size_t>(id)].spelling;
}

bool BpeTokenizer::is_special(int32_t id) const {
  return id >= 0 && id < vocab_size() && tokens_[static_cast<size_t>(id)].special;
}

}  // namespace shardserve::model
