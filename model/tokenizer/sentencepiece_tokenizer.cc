#include "model/tokenizer/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>

#include <charconv>

#include "common/error.h"
#include "model/tokenizer/utf8.h"

namespace shardserve::model {
namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // U+2581, SentencePiece's space

// The few ModelProto fields decoding depends on. libsentencepiece does not install its
// generated protobuf header, so they are read from the serialized model with the wire format
// (sentencepiece_model.proto: ModelProto.normalizer_spec = 3, .denormalizer_spec = 5;
// NormalizerSpec.precompiled_charsmap = 2, .add_dummy_prefix = 3 [default true],
// .remove_extra_whitespaces = 4 [default true]).
struct NormalizerFlags {
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool has_denormalizer = false;
};

class WireReader {
 public:
  explicit WireReader(std::string_view data) : data_(data) {}
  bool done() const { return pos_ >= data_.size(); }
  bool varint(uint64_t* value) {
    *value = 0;
    for (int shift = 0; shift < 64 && pos_ < data_.size(); shift += 7) {
      const auto b = static_cast<unsigned char>(data_[pos_++]);
      *value |= static_cast<uint64_t>(b & 0x7F) << shift;
      if ((b & 0x80) == 0) return true;
    }
    return false;
  }
  // Reads one field; `bytes` is set for length-delimited ones, `number` for varints.
  bool field(uint32_t* tag_field, uint32_t* wire, uint64_t* number, std::string_view* bytes) {
    uint64_t tag = 0;
    if (!varint(&tag)) return false;
    *tag_field = static_cast<uint32_t>(tag >> 3);
    *wire = static_cast<uint32_t>(tag & 7);
    switch (*wire) {
      case 0: return varint(number);
      case 1: return skip(8);
      case 5: return skip(4);
      case 2: {
        uint64_t len = 0;
        if (!varint(&len) || len > data_.size() - pos_) return false;
        *bytes = data_.substr(pos_, len);
        pos_ += len;
        return true;
      }
      default: return false;
    }
  }

 private:
  bool skip(size_t n) {
    if (n > data_.size() - pos_) return false;
    pos_ += n;
    return true;
  }
  std::string_view data_;
  size_t pos_ = 0;
};

NormalizerFlags read_normalizer_flags(std::string_view model, const std::string& file) {
  NormalizerFlags flags;
  WireReader top(model);
  while (!top.done()) {
    uint32_t field = 0, wire = 0;
    uint64_t number = 0;
    std::string_view bytes;
    require(top.field(&field, &wire, &number, &bytes), "{}: cannot read the model's protobuf",
            file);
    if (wire != 2 || (field != 3 && field != 5)) continue;
    WireReader spec(bytes);
    while (!spec.done()) {
      uint32_t f = 0, w = 0;
      uint64_t n = 0;
      std::string_view b;
      require(spec.field(&f, &w, &n, &b), "{}: cannot read the model's normalizer spec", file);
      if (field == 5) {
        if (f == 2 && w == 2 && !b.empty()) flags.has_denormalizer = true;
      } else if (f == 3 && w == 0) {
        flags.add_dummy_prefix = n != 0;
      } else if (f == 4 && w == 0) {
        flags.remove_extra_whitespaces = n != 0;
      }
    }
  }
  return flags;
}

std::string replace_space_symbol(std::string_view piece) {
  std::string out;
  out.reserve(piece.size());
  size_t i = 0;
  while (i < piece.size()) {
    if (piece.substr(i).starts_with(kSpaceSymbol)) {
      out.push_back(' ');
      i += kSpaceSymbol.size();
    } else {
      out.push_back(piece[i++]);
    }
  }
  return out;
}

}  // namespace

SentencePieceTokenizer::SentencePieceTokenizer(const std::filesystem::path& model_file,
                                               TokenizerConfig config)
    : processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()),
      file_(model_file.string()),
      config_(std::move(config)) {
  require(std::filesystem::exists(model_file), "cannot open {}: no such file", file_);
  const auto status = processor_->Load(file_);
  require(status.ok(), "cannot load SentencePiece model {}: {}", file_, status.ToString());

  const NormalizerFlags flags = read_normalizer_flags(processor_->serialized_model_proto(), file_);
  // The library rewrites the whole decoded text through a denormalizer; piece-by-piece
  // streaming could not reproduce that.
  require(!flags.has_denormalizer, "{}: SentencePiece models with a denormalizer are not "
          "supported", file_);
  rules_.repair = Utf8Repair::kPerByte;
  rules_.strip_first_space = flags.add_dummy_prefix || flags.remove_extra_whitespaces;
  rules_.strip_leading_spaces = flags.remove_extra_whitespaces;

  const int n = processor_->GetPieceSize();
  pieces_.resize(static_cast<size_t>(n));
  const int unk = processor_->unk_id();
  const std::string unk_surface = unk >= 0 ? processor_->DecodeIds({unk}) : std::string();
  for (int id = 0; id < n; ++id) {
    Piece& p = pieces_[static_cast<size_t>(id)];
    const std::string& piece = processor_->IdToPiece(id);
    if (processor_->IsByte(id)) {
      // Byte pieces are spelled <0xNN>.
      unsigned value = 0;
      const bool ok = piece.size() == 6 && piece.starts_with("<0x") && piece.ends_with(">") &&
                      std::from_chars(piece.data() + 3, piece.data() + 5, value, 16).ec == std::errc();
      require(ok, "{}: byte piece {} is spelled {:?}, not <0xNN>", file_, id, piece);
      p.kind = TokenText::Kind::kBytes;
      p.text = std::string(1, static_cast<char>(value));
    } else if (processor_->IsControl(id)) {
      p.special = true;
    } else if (processor_->IsUnknown(id)) {
      p.text = unk_surface;
      p.special = true;
    } else {
      p.text = replace_space_symbol(piece);
      p.space_prefix = std::string_view(piece).starts_with(kSpaceSymbol);
    }
  }

  const auto id_of = [&](const std::string& token, const char* what) {
    const std::optional<int32_t> id = token_to_id(token);
    require(id.has_value(), "tokenizer_config.json: {} {:?} is not a piece of {}", what, token,
            file_);
    return *id;
  };
  if (config_.bos_token) {
    bos_id_ = id_of(*config_.bos_token, "bos_token");
  } else if (processor_->bos_id() >= 0) {
    bos_id_ = processor_->bos_id();
  }
  if (config_.eos_token) {
    eos_ids_.push_back(id_of(*config_.eos_token, "eos_token"));
  } else if (processor_->eos_id() >= 0) {
    eos_ids_.push_back(processor_->eos_id());
  }
  add_bos_ = config_.add_bos_token.value_or(true);
  add_eos_ = config_.add_eos_token.value_or(false);
  require(!add_bos_ || bos_id_, "{}: BOS is to be added but the model has no BOS piece", file_);
  require(!add_eos_ || !eos_ids_.empty(), "{}: EOS is to be added but the model has no EOS piece",
          file_);
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::vector<int32_t> SentencePieceTokenizer::encode(std::string_view text,
                                                    bool add_special_tokens) const {
  if (const auto bad = find_invalid_utf8(text)) {
    fail("cannot tokenize: text is not valid UTF-8 at byte {} of {}", *bad, text.size());
  }
  std::vector<int> pieces;
  const auto status = processor_->Encode(text, &pieces);
  require(status.ok(), "{}: SentencePiece encode failed: {}", file_, status.ToString());
  std::vector<int32_t> ids;
  ids.reserve(pieces.size() + 2);
  if (add_special_tokens && add_bos_) ids.push_back(*bos_id_);
  ids.insert(ids.end(), pieces.begin(), pieces.end());
  if (add_special_tokens && add_eos_) ids.push_back(eos_ids_.front());
  return ids;
}

std::string SentencePieceTokenizer::decode(std::span<const int32_t> ids,
                                           bool skip_special_tokens) const {
  std::vector<int> kept;
  kept.reserve(ids.size());
  for (const int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    if (skip_special_tokens && pieces_[static_cast<size_t>(id)].special) continue;
    kept.push_back(id);
  }
  std::string text;
  const auto status = processor_->Decode(kept, &text);
  require(status.ok(), "{}: SentencePiece decode failed: {}", file_, status.ToString());
  return text;
}

std::optional<TokenText> SentencePieceTokenizer::token_text(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return std::nullopt;
  const Piece& p = pieces_[static_cast<size_t>(id)];
  return TokenText{p.kind, p.text, p.space_prefix};
}

std::optional<int32_t> SentencePieceTokenizer::token_to_id(std::string_view token) const {
  const int id = processor_->PieceToId(token);
  // PieceToId answers unk_id for anything it does not know.
  if (id < 0 || id >= vocab_size() || processor_->IdToPiece(id) != token) return std::nullopt;
  return id;
}

std::optional<std::string> SentencePieceTokenizer::id_to_token(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return std::nullopt;
  return processor_->IdToPiece(id);
}

bool SentencePieceTokenizer::is_special(int32_t id) const {
  return id >= 0 && id < vocab_size() && pieces_[static_cast<size_t>(id)].special;
}

}  // namespace shardserve::model
