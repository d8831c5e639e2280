#include "model/tokenizer/tokenizer_config.h"

#include <fstream>
#include <sstream>

#include "common/error.h"
#include "model/tokenizer/json_access.h"

namespace shardserve::model {
namespace {

// A token is written either as its text or as a serialized AddedToken {"content": ...}.
std::optional<std::string> token_field(const JsonPath& config, std::string_view key) {
  if (!config.has(key) || config[key].is_null()) return std::nullopt;
  const JsonPath value = config[key];
  if (value.value().is_object()) return value["content"].string();
  return value.string();
}

std::optional<bool> bool_field(const JsonPath& config, std::string_view key) {
  if (!config.has(key) || config[key].is_null()) return std::nullopt;
  return config[key].boolean();
}

}  // namespace

TokenizerConfig read_tokenizer_config(const std::filesystem::path& model_dir) {
  TokenizerConfig result;
  const std::filesystem::path path = model_dir / "tokenizer_config.json";
  if (std::filesystem::exists(path)) {
    const nlohmann::json json = read_json_file(path);
    const JsonPath config(path.string(), json);
    config.object();
    result.add_bos_token = bool_field(config, "add_bos_token");
    result.add_eos_token = bool_field(config, "add_eos_token");
    result.bos_token = token_field(config, "bos_token");
    result.eos_token = token_field(config, "eos_token");
    if (config.has("chat_template") && !config["chat_template"].is_null()) {
      const JsonPath templ = config["chat_template"];
      if (templ.value().is_array()) {
        // Several named templates: the one named "default" is what apply_chat_template uses.
        for (size_t i = 0; i < templ.value().size(); ++i) {
          if (templ[i]["name"].string() == "default") result.chat_template = templ[i]["template"].string();
        }
      } else {
        result.chat_template = templ.string();
      }
    }
  }
  const std::filesystem::path jinja = model_dir / "chat_template.jinja";
  if (std::filesystem::exists(jinja)) {
    std::ifstream in(jinja, std::ios::binary);
    require(in.good(), "cannot read {}", jinja.string());
    std::ostringstream text;
    text << in.rdbuf();
    result.chat_template = text.str();
  }
  return result;
}

}  // namespace shardserve::model
