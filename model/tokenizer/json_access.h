#pragma once
// Reading tokenizer JSON files so that every complaint names the file, the JSON path and the
// value found, e.g. "tokenizer.json: model.type is \"Unigram\"".
#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <string_view>

namespace shardserve::model {

// Parses a JSON file; a missing file or a syntax error becomes an Error naming the file.
nlohmann::json read_json_file(const std::filesystem::path& path);

// A place inside a JSON document: the file and the dotted path to the value.
class JsonPath {
 public:
  JsonPath(std::string file, const nlohmann::json& value) : file_(std::move(file)), value_(&value) {}

  const nlohmann::json& value() const { return *value_; }
  std::string where() const;  // "<file>: <path>"
  const std::string& path() const { return path_; }

  bool has(std::string_view key) const;
  // The member `key`; fails if it is missing.
  JsonPath operator[](std::string_view key) const;
  JsonPath operator[](size_t index) const;

  bool is_null() const { return value_->is_null(); }
  // Each fails naming the path and the value when the type is wrong.
  std::string string() const;
  bool boolean() const;
  int64_t integer() const;
  const nlohmann::json& object() const;
  const nlohmann::json& array() const;

  // A member that may be missing or null: the fallback then; otherwise it must be a boolean.
  bool boolean_or(std::string_view key, bool fallback) const;

  // The value, shortened, for messages.
  std::string show() const;

 private:
  JsonPath(std::string file, std::string path, const nlohmann::json& value)
      : file_(std::move(file)), path_(std::move(path)), value_(&value) {}

  std::string file_;
  std::string path_;
  const nlohmann::json* value_;
};

}  // namespace shardserve::model
