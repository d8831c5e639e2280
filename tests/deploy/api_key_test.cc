// The gateway's API key check (gateway/api_key.h): key files (permissions, short keys, several
// keys), the Authorization header rules, and the pre-routing hook on a real cpp-httplib server
// over loopback: 401 with OpenAI's error body and WWW-Authenticate without the key or with a
// wrong one, the route's own answer with it, /health open.
#include "gateway/api_key.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

namespace shardserve::gateway {
namespace {

namespace fs = std::filesystem;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

class KeyFile {
 public:
  KeyFile(const std::string& text, mode_t mode) {
    char templ[] = "/tmp/shardserve-apikey-XXXXXX";
    const int fd = mkstemp(templ);
    close(fd);
    path_ = templ;
    std::ofstream(path_) << text;
    fs::permissions(path_, static_cast<fs::perms>(mode));
  }
  ~KeyFile() { fs::remove(path_); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

constexpr const char* kKey1 = "k1-0123456789abcdef0123456789";
constexpr const char* kKey2 = "k2-fedcba9876543210fedcba9876";

TEST(ApiKeys, FileRules) {
  KeyFile good(std::string("# rotated on 2026-12-01\n") + kKey1 + "\n\n  " + kKey2 + "  \n", 0600);
  const auto keys = ApiKeys::load(good.path());
  EXPECT_EQ(keys.size(), 2u);

  KeyFile readable(std::string(kKey1) + "\n", 0644);
  EXPECT_NE(error_of([&] { ApiKeys::load(readable.path()); })
                .find("readable by others (mode 0644)"),
            std::string::npos);
  KeyFile short_key("# c\nshort\n", 0600);
  EXPECT_NE(error_of([&] { ApiKeys::load(short_key.path()); })
                .find(":2: a key of 5 characters is too short (at least 16"),
            std::string::npos);
  KeyFile empty("# only a comment\n", 0600);
  EXPECT_NE(error_of([&] { ApiKeys::load(empty.path()); }).find("no key in the file"),
            std::string::npos);
  EXPECT_NE(error_of([&] { ApiKeys::load("/nonexistent/keys"); })
                .find("--api-key-file /nonexistent/keys: No such file"),
            std::string::npos);
}

TEST(ApiKeys, AuthorizationHeader) {
  KeyFile f(std::string(kKey1) + "\n" + kKey2 + "\n", 0600);
  const auto keys = ApiKeys::load(f.path());
  EXPECT_TRUE(keys.authorizes(std::string("Bearer ") + kKey1));
  EXPECT_TRUE(keys.authorizes(std::string("bearer ") + kKey2));  // the scheme is case-insensitive
  EXPECT_FALSE(keys.authorizes(""));
  EXPECT_FALSE(keys.authorizes("Bearer "));
  EXPECT_FALSE(keys.authorizes(kKey1));                              // no scheme
  EXPECT_FALSE(keys.authorizes(std::string("Basic ") + kKey1));      // another scheme
  EXPECT_FALSE(keys.authorizes(std::string("Bearer ") + kKey1 + "x"));  // longer
  std::string off_by_one = std::string("Bearer ") + kKey1;
  off_by_one.back() ^= 1;
  EXPECT_FALSE(keys.authorizes(off_by_one));
}

TEST(ApiKeys, HttpServerAnswers401WithoutTheKey) {
  KeyFile f(std::string(kKey1) + "\n", 0600);
  httplib::Server svr;
  svr.Get("/health", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"status":"ok"})", "application/json");
  });
  svr.Get("/v1/models", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"data":[]})", "application/json");
  });
  svr.Post("/v1/completions", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"ok":true})", "application/json");
  });
  require_api_key(svr, ApiKeys::load(f.path()));
  const int port = svr.bind_to_any_port("127.0.0.1");
  ASSERT_GT(port, 0);
  std::thread t([&] { svr.listen_after_bind(); });
  while (!svr.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));

  httplib::Client c("127.0.0.1", port);
  auto missing = c.Get("/v1/models");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 401);
  EXPECT_EQ(missing->get_header_value("WWW-Authenticate"), "Bearer");
  const auto body = nlohmann::json::parse(missing->body);
  EXPECT_EQ(body["error"]["code"], "invalid_api_key");
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_NE(body["error"]["message"].get<std::string>().find("Missing API key"), std::string::npos);

  auto wrong = c.Post("/v1/completions", {{"Authorization", "Bearer not-the-key-0123456789"}},
                      "{}", "application/json");
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 401);
  EXPECT_NE(wrong->body.find("Incorrect API key"), std::string::npos);

  auto right = c.Post("/v1/completions", {{"Authorization", std::string("Bearer ") + kKey1}}, "{}",
                      "application/json");
  ASSERT_TRUE(right);
  EXPECT_EQ(right->status, 200);
  EXPECT_EQ(right->body, R"({"ok":true})");

  auto health = c.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  svr.stop();
  t.join();
}

}  // namespace
}  // namespace shardserve::gateway
