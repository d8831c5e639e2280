#pragma once
// The gateway's API keys (docs/deploy.md). A key file holds one key per line ('#' starts a
// comment), so a key can be rotated by listing the new one beside the old; the file is named by
// --api-key-file, never a key itself on the command line. A request is let in when its
// `Authorization: Bearer <key>` names one of the keys; otherwise it gets 401 with OpenAI's error
// body and `WWW-Authenticate: Bearer`. GET /health stays open (liveness probes carry no key).
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace httplib {
class Server;
}

namespace shardserve::gateway {

class ApiKeys {
 public:
  // Throws naming the file: unreadable, readable by group or others, no key, a key shorter
  // than kMinLength or containing whitespace.
  static ApiKeys load(const std::filesystem::path& file);
  static constexpr std::size_t kMinLength = 16;

  // `authorization` is the Authorization header's value ("" when absent). The comparison takes
  // the same time whichever byte differs.
  bool authorizes(std::string_view authorization) const;
  std::size_t size() const { return keys_.size(); }

 private:
  std::vector<std::string> keys_;
};

// Answers 401 before routing for every request but GET /health that `keys` does not authorize.
void require_api_key(httplib::Server& server, ApiKeys keys);

}  // namespace shardserve::gateway
