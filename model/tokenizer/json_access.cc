#include "model/tokenizer/json_access.h"

#include <fstream>
#include <sstream>

#include "common/error.h"

namespace shardserve::model {

nlohmann::json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  require(in.good(), "cannot open {}: {}", path.string(),
          std::filesystem::exists(path) ? "not readable" : "no such file");
  std::ostringstream text;
  text << in.rdbuf();
  try {
    return nlohmann::json::parse(text.str());
  } catch (const nlohmann::json::parse_error& e) {
    fail("{} is not valid JSON: {}", path.string(), e.what());
  }
}

std::string JsonPath::where() const {
  return path_.empty() ? file_ : file_ + ": " + path_;
}

bool JsonPath::has(std::string_view key) const {
  return value_->is_object() && value_->contains(key);
}

JsonPath JsonPath::operator[](std::string_view key) const {
  const std::string child = path_.empty() ? std::string(key) : path_ + "." + std::string(key);
  require(value_->is_object(), "{}: expected an object, found {}", where(), show());
  const auto it = value_->find(key);
  require(it != value_->end(), "{}: {} is missing", file_, child);
  return JsonPath(file_, child, *it);
}

JsonPath JsonPath::operator[](size_t index) const {
  require(value_->is_array() && index < value_->size(), "{}: expected an array of more than {} "
          "elements, found {}", where(), index, show());
  return JsonPath(file_, path_ + "[" + std::to_string(index) + "]", (*value_)[index]);
}

std::string JsonPath::string() const {
  require(value_->is_string(), "{}: expected a string, found {}", where(), show());
  return value_->get<std::string>();
}

bool JsonPath::boolean() const {
  require(value_->is_boolean(), "{}: expected true or false, found {}", where(), show());
  return value_->get<bool>();
}

int64_t JsonPath::integer() const {
  require(value_->is_number_integer(), "{}: expected an integer, found {}", where(), show());
  return value_->get<int64_t>();
}

const nlohmann::json& JsonPath::object() const {
  require(value_->is_object(), "{}: expected an object, found {}", where(), show());
  return *value_;
}

const nlohmann::json& JsonPath::array() const {
  require(value_->is_array(), "{}: expected an array, found {}", where(), show());
  return *value_;
}

bool JsonPath::boolean_or(std::string_view key, bool fallback) const {
  if (!has(key) || (*value_)[std::string(key)].is_null()) return fallback;
  return (*this)[key].boolean();
}

std::string JsonPath::show() const {
  std::string text = value_->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (text.size() > 80) text = text.substr(0, 77) + "...";
  return text;
}

}  // namespace shardserve::model
