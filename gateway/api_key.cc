#include "gateway/api_key.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <httplib.h>

#include "api/curve.h"
#include "common/error.h"
#include "gateway/openai.h"

namespace shardserve::gateway {
namespace {

// Equal-length comparison whose time does not depend on where the first difference is.
bool same(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i]) ^ static_cast<unsigned char>(b[i]);
  return diff == 0;
}

}  // namespace

ApiKeys ApiKeys::load(const std::filesystem::path& file) {
  const std::string what = fmt::format("--api-key-file {}", file.string());
  struct stat st {};
  // errno is read after stat(): function arguments have no evaluation order.
  if (::stat(file.c_str(), &st) != 0) fail("{}: {}", what, std::strerror(errno));
  require(S_ISREG(st.st_mode), "{}: not a regular file", what);
  api::require_private_file(file, what);
  std::ifstream in(file);
  require(static_cast<bool>(in), "{}: cannot be read", what);
  ApiKeys keys;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    const auto b = line.find_first_not_of(" \t\r");
    if (b == std::string::npos || line[b] == '#') continue;
    const auto e = line.find_last_not_of(" \t\r");
    std::string key = line.substr(b, e - b + 1);
    require(key.find_first_of(" \t") == std::string::npos, "{}:{}: a key contains whitespace",
            what, n);
    require(key.size() >= kMinLength,
            "{}:{}: a key of {} characters is too short (at least {}; e.g. `head -c 32 "
            "/dev/urandom | base64`)",
            what, n, key.size(), kMinLength);
    keys.keys_.push_back(std::move(key));
  }
  require(!keys.keys_.empty(), "{}: no key in the file", what);
  return keys;
}

bool ApiKeys::authorizes(std::string_view authorization) const {
  constexpr std::string_view kScheme = "Bearer ";
  if (authorization.size() <= kScheme.size()) return false;
  // RFC 7235: the scheme is case-insensitive.
  for (std::size_t i = 0; i < kScheme.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(authorization[i])) !=
        std::tolower(static_cast<unsigned char>(kScheme[i])))
      return false;
  const std::string_view presented = authorization.substr(kScheme.size());
  bool ok = false;
  for (const auto& k : keys_) ok |= same(presented, k);  // no early exit: every key compared
  return ok;
}

void require_api_key(httplib::Server& server, ApiKeys keys) {
  spdlog::info("gateway: API key required ({} key(s) loaded); GET /health is open", keys.size());
  server.set_pre_routing_handler(
      [keys = std::move(keys)](const httplib::Request& req, httplib::Response& res) {
        if (req.method == "GET" && req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
        if (keys.authorizes(req.get_header_value("Authorization")))
          return httplib::Server::HandlerResponse::Unhandled;
        OpenAIError e;
        e.status = 401;
        e.code = "invalid_api_key";
        e.message = req.has_header("Authorization")
                        ? "Incorrect API key provided."
                        : "Missing API key: send `Authorization: Bearer <key>`.";
        res.status = 401;
        res.set_header("WWW-Authenticate", "Bearer");
        res.set_content(e.body().dump(), "application/json");
        spdlog::warn("gateway: 401 for {} {} from {}", req.method, req.path, req.remote_addr);
        return httplib::Server::HandlerResponse::Handled;
      });
}

}  // namespace shardserve::gateway
