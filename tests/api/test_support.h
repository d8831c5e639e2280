#pragma once
// Helpers shared by the API tests: committed fixtures and JSON files.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

namespace shardserve::api::testing {

inline std::filesystem::path source_dir() { return SHARDSERVE_SOURCE_DIR; }
inline std::filesystem::path fixture(const std::string& name) {
  return source_dir() / "tests/fixtures" / name;
}

inline nlohmann::json read_json(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return nlohmann::json::parse(text.str());
}

}  // namespace shardserve::api::testing
