// CURVE on the ZeroMQ job API (api/curve.h), through real sockets on loopback and the real
// engine: key files (generation, permissions, malformed files, mismatched pairs), the
// loopback-only rule without CURVE, and a CURVE front end that serves an authorized client
// exactly (greedy tokens equal transformers'), refuses an unknown key and a plain client with
// errors naming the cause, and lets a client in once its .pub file is added (no restart).
#include "api/curve.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <thread>
#include <zmq_addon.hpp>

#include "api/client.h"
#include "api/front_end.h"
#include "api/local/local_engine.h"
#include "config/service_config.h"
#include "tests/api/test_support.h"

namespace shardserve::api {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

class TempDir {
 public:
  TempDir() {
    char templ[] = "/tmp/shardserve-curve-XXXXXX";
    path_ = mkdtemp(templ);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

mode_t mode_of(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(stat(p.c_str(), &st), 0) << p;
  return st.st_mode & 07777;
}

void write_text(const fs::path& p, const std::string& text, mode_t mode) {
  std::ofstream(p) << text;
  fs::permissions(p, static_cast<fs::perms>(mode));
}

TEST(CurveKeys, GeneratedFilesReadBackAsOnePair) {
  TempDir dir;
  const auto keys = generate_curve_keypair();
  ASSERT_EQ(keys.public_key.size(), 40u);
  ASSERT_EQ(keys.secret_key.size(), 40u);
  EXPECT_EQ(curve_public_key_of(keys.secret_key, "k"), keys.public_key);
  const auto other = generate_curve_keypair();
  EXPECT_NE(other.secret_key, keys.secret_key);

  write_curve_key_files(dir.path() / "server", keys);
  EXPECT_EQ(mode_of(dir.path() / "server.key"), 0600u);
  EXPECT_EQ(mode_of(dir.path() / "server.pub"), 0644u);
  EXPECT_EQ(read_curve_key_file(dir.path() / "server.key", true), keys.secret_key);
  EXPECT_EQ(read_curve_key_file(dir.path() / "server.pub", false), keys.public_key);
  // Never overwritten: a second keygen with the same name fails and leaves the pair intact.
  EXPECT_NE(error_of([&] { write_curve_key_files(dir.path() / "server", other); })
                .find("never overwritten"),
            std::string::npos);
  EXPECT_EQ(read_curve_key_file(dir.path() / "server.key", true), keys.secret_key);
}

TEST(CurveKeys, BadFilesAreRefusedNamingTheFileAndTheProblem) {
  TempDir dir;
  const auto keys = generate_curve_keypair();
  const auto readable = dir.path() / "readable.key";
  write_text(readable, keys.secret_key + "\n", 0644);
  EXPECT_NE(error_of([&] { read_curve_key_file(readable, true); })
                .find("secret key file " + readable.string() +
                      ": readable by others (mode 0644)"),
            std::string::npos);
  // Group-readable: fine for a group of this process (Kubernetes' fsGroup), refused otherwise.
  const auto group_key = dir.path() / "group.key";
  write_text(group_key, keys.secret_key + "\n", 0640);
  EXPECT_EQ(read_curve_key_file(group_key, true), keys.secret_key);
  if (chown(group_key.c_str(), static_cast<uid_t>(-1), 54321) == 0) {  // needs root
    EXPECT_NE(error_of([&] { read_curve_key_file(group_key, true); })
                  .find("readable by group 54321 (mode 0640), which this process is not in"),
              std::string::npos);
  }
  const auto short_key = dir.path() / "short.pub";
  write_text(short_key, "# comment\nabc\n", 0644);
  EXPECT_NE(error_of([&] { read_curve_key_file(short_key, false); })
                .find("expected one Z85-encoded CURVE key of 40 characters, got 3"),
            std::string::npos);
  const auto two = dir.path() / "two.pub";
  write_text(two, keys.public_key + "\n" + keys.public_key + "\n", 0644);
  EXPECT_NE(error_of([&] { read_curve_key_file(two, false); }).find("found 2"),
            std::string::npos);
  EXPECT_NE(error_of([&] { read_curve_key_file(dir.path() / "absent.pub", false); })
                .find("No such file"),
            std::string::npos);
  // A bad .pub in the clients' directory fails at start-up (strict), is skipped later.
  fs::create_directory(dir.path() / "clients");
  write_text(dir.path() / "clients" / "good.pub", keys.public_key + "\n", 0644);
  write_text(dir.path() / "clients" / "bad.pub", "xyz\n", 0644);
  write_text(dir.path() / "clients" / "notes.txt", "ignored\n", 0644);
  EXPECT_NE(error_of([&] { read_authorized_keys(dir.path() / "clients", true); }).find("bad.pub"),
            std::string::npos);
  const auto lenient = read_authorized_keys(dir.path() / "clients", false);
  ASSERT_EQ(lenient.size(), 1u);
  EXPECT_EQ(lenient.begin()->first, keys.public_key);
  EXPECT_EQ(lenient.begin()->second, "good");
}

TEST(CurveKeys, LocalEndpoints) {
  for (const char* e : {"tcp://127.0.0.1:5555", "tcp://127.0.0.1:*", "tcp://localhost:1",
                        "tcp://[::1]:5555", "ipc:///run/shardserve.sock", "inproc://x",
                        "tcp://127.1.2.3:80"})
    EXPECT_TRUE(is_local_endpoint(e)) << e;
  for (const char* e : {"tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://10.0.0.1:5555",
                        "tcp://eth0:5555", "tcp://127.0.0.1.example.com:1", "tcp://[::]:5555"})
    EXPECT_FALSE(is_local_endpoint(e)) << e;
}

TEST(SecurityConfig, FileAndValidation) {
  TempDir dir;
  const auto keys = generate_curve_keypair();
  write_curve_key_files(dir.path() / "server", keys);
  fs::create_directory(dir.path() / "clients");
  const std::string text = fmt::format(
      "model = \"m\"\n[security]\ncurve_secret_key_file = \"{0}/server.key\"\n"
      "curve_public_key_file = \"{0}/server.pub\"\nauthorized_clients_dir = \"{0}/clients\"\n",
      dir.path().string());
  const auto c = config::parse_toml(text, "s.toml");
  EXPECT_EQ(c.security.curve_secret_key_file, (dir.path() / "server.key").string());
  EXPECT_FALSE(c.security.allow_plaintext);
  EXPECT_EQ(config::parse_toml(config::to_toml(c), "round trip"), c);
  EXPECT_NO_THROW(config::validate_security(c.security));
  EXPECT_EQ(config::ServiceConfig{}.ports.host, "127.0.0.1");  // loopback unless told otherwise

  config::SecuritySettings s = c.security;
  s.authorized_clients_dir.clear();
  EXPECT_NE(error_of([&] { config::validate_security(s); })
                .find("security.authorized_clients_dir is not"),
            std::string::npos);
  s = c.security;
  s.curve_secret_key_file.clear();
  EXPECT_NE(error_of([&] { config::validate_security(s); })
                .find("CURVE needs the server's secret key file"),
            std::string::npos);
  s = c.security;
  s.curve_secret_key_file = (dir.path() / "nope.key").string();
  EXPECT_NE(error_of([&] { config::validate_security(s); }).find("nope.key' is not a file"),
            std::string::npos);
  EXPECT_NE(error_of([&] { config::parse_toml("[security]\ncurve_key = \"x\"\n", "s.toml"); })
                .find("security.curve_key: unknown setting"),
            std::string::npos);
}

class CurveFrontEnd : public ::testing::Test {
 protected:
  void SetUp() override {
    LocalEngineOptions eo;
    eo.model_dir = testing::fixture("llama3-bpe");
    eo.max_model_len = 512;
    eo.kv_blocks = 256;
    eo.max_num_seqs = 16;
    eo.max_num_batched_tokens = 512;
    engine_ = std::make_unique<LocalEngine>(eo);
    server_ = generate_curve_keypair();
    alice_ = generate_curve_keypair();
    mallory_ = generate_curve_keypair();
    write_curve_key_files(dir_.path() / "server", server_);
    write_curve_key_files(dir_.path() / "alice", alice_);
    write_curve_key_files(dir_.path() / "mallory", mallory_);
    fs::create_directory(clients());
    fs::copy_file(dir_.path() / "alice.pub", clients() / "alice.pub");
  }
  void TearDown() override {
    stop_ = true;
    if (engine_thread_.joinable()) engine_thread_.join();
    front_.reset();
  }
  fs::path clients() const { return dir_.path() / "clients"; }
  CurveServerOptions curve() const {
    return {(dir_.path() / "server.key").string(), (dir_.path() / "server.pub").string(),
            clients().string(), false};
  }
  void start(FrontEndOptions fo) {
    front_ = std::make_unique<FrontEnd>(fo, engine_->model_info(), engine_->tokenizer());
    engine_thread_ = std::thread([this] { serve(*engine_, *front_, stop_); });
  }
  ClientOptions as(const std::string& who) const {
    ClientOptions o;
    o.curve = {(dir_.path() / "server.pub").string(), (dir_.path() / (who + ".key")).string()};
    return o;
  }

  TempDir dir_;
  CurveKeyPair server_, alice_, mallory_;
  std::unique_ptr<LocalEngine> engine_;
  std::unique_ptr<FrontEnd> front_;
  std::thread engine_thread_;
  std::atomic<bool> stop_{false};
};

TEST_F(CurveFrontEnd, PlainTextBeyondLoopbackIsRefusedUnlessAllowed) {
  FrontEndOptions fo;
  fo.endpoint = "tcp://0.0.0.0:*";
  EXPECT_NE(error_of([&] { FrontEnd f(fo, engine_->model_info(), engine_->tokenizer()); })
                .find("refusing to serve tcp://0.0.0.0:* without CURVE"),
            std::string::npos);
  fo.curve.allow_plaintext = true;
  EXPECT_NO_THROW(FrontEnd(fo, engine_->model_info(), engine_->tokenizer()));
}

TEST_F(CurveFrontEnd, MismatchedKeyPairIsRefusedAtStart) {
  FrontEndOptions fo;
  fo.endpoint = "tcp://127.0.0.1:*";
  fo.curve = curve();
  fo.curve.public_key_file = (dir_.path() / "alice.pub").string();
  EXPECT_NE(error_of([&] { FrontEnd f(fo, engine_->model_info(), engine_->tokenizer()); })
                .find("the two files are not one pair"),
            std::string::npos);
  fo.curve = curve();
  fo.curve.authorized_clients_dir.clear();
  EXPECT_NE(error_of([&] { FrontEnd f(fo, engine_->model_info(), engine_->tokenizer()); })
                .find("authorized_clients_dir is not"),
            std::string::npos);
}

TEST_F(CurveFrontEnd, AuthorizedClientServedOthersRefused) {
  FrontEndOptions fo;
  fo.endpoint = "tcp://0.0.0.0:*";  // CURVE on: any address may be served
  fo.curve = curve();
  start(fo);
  const std::string port = front_->endpoint().substr(front_->endpoint().rfind(':'));
  const std::string endpoint = "tcp://127.0.0.1" + port;

  // The authorized client: a greedy completion equal to transformers' reference.
  const auto ref = testing::read_json(testing::fixture("llama3-bpe/reference.json"))["prompts"][0];
  const auto greedy = ref["greedy"].get<std::vector<int32_t>>();
  Client alice(endpoint, as("alice"));
  SubmitRequest s;
  s.id = "a1";
  s.prompt_ids = ref["ids"].get<std::vector<int32_t>>();
  s.max_tokens = static_cast<int32_t>(greedy.size());
  s.temperature = 0.0f;
  s.ignore_eos = true;
  alice.send(s);
  std::vector<int32_t> got;
  std::optional<Final> final;
  const auto deadline = Clock::now() + 60s;
  while (!final && Clock::now() < deadline) {
    auto m = alice.receive(200ms);
    if (!m) continue;
    if (auto* d = std::get_if<Delta>(&*m)) got.insert(got.end(), d->token_ids.begin(), d->token_ids.end());
    if (auto* f = std::get_if<Final>(&*m)) final = *f;
    ASSERT_FALSE(std::holds_alternative<ErrorReply>(*m));
  }
  ASSERT_TRUE(final.has_value());
  EXPECT_EQ(got, greedy);

  // A valid CURVE key the server does not list: refused by the ZAP handler, said so.
  {
    Client mallory(endpoint, as("mallory"));
    const std::string e = error_of([&] { mallory.health(10s); });
    EXPECT_NE(e.find("refused this client (ZAP status 400)"), std::string::npos) << e;
  }
  // No CURVE at all: the handshake fails on the mechanism.
  {
    Client plain(endpoint);
    const std::string e = error_of([&] { plain.health(10s); });
    EXPECT_NE(e.find("without CURVE keys"), std::string::npos) << e;
  }
  // Right client key, wrong server key: the server cannot be authenticated, nothing is served.
  {
    ClientOptions o = as("alice");
    o.curve.server_public_key_file = (dir_.path() / "mallory.pub").string();
    Client fooled(endpoint, o);
    const std::string e = error_of([&] { fooled.health(3s); });
    // libzmq drops the connection (the server cannot decrypt the hello): a timeout or a
    // handshake failure, never an answer.
    EXPECT_TRUE(e.find("no answer") != std::string::npos ||
                e.find("handshake with") != std::string::npos)
        << e;
  }
  // Allow-listing takes effect at the next handshake, without a restart.
  fs::copy_file(dir_.path() / "mallory.pub", clients() / "mallory.pub");
  Client mallory(endpoint, as("mallory"));
  EXPECT_EQ(mallory.health(10s).status, "ok");
  fs::remove(clients() / "alice.pub");
  Client alice_again(endpoint, as("alice"));
  EXPECT_NE(error_of([&] { alice_again.health(10s); }).find("refused"), std::string::npos);
}

TEST_F(CurveFrontEnd, ZapHandlerCountsEachDecisionOnABareRouter) {
  zmq::context_t context(1);
  zmq::socket_t router(context, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  auto zap = secure_server_socket(context, router, curve(), "tcp://127.0.0.1:*");
  ASSERT_NE(zap, nullptr);
  router.bind("tcp://127.0.0.1:*");
  const std::string endpoint = router.get(zmq::sockopt::last_endpoint);
  auto wait_for = [](const std::function<bool()>& done) {
    const auto deadline = Clock::now() + 10s;
    while (!done() && Clock::now() < deadline) std::this_thread::sleep_for(5ms);
    return done();
  };
  Client alice(endpoint, as("alice"));
  alice.send(HealthRequest{});
  EXPECT_TRUE(wait_for([&] { return zap->accepted() == 1; }));
  // Alice's message reached the router, decrypted: her routing id frame, then the payload.
  zmq::pollitem_t item{router.handle(), 0, ZMQ_POLLIN, 0};
  ASSERT_EQ(zmq::poll(&item, 1, std::chrono::milliseconds(10000)), 1);
  std::vector<zmq::message_t> frames;
  ASSERT_TRUE(zmq::recv_multipart(router, std::back_inserter(frames)));
  EXPECT_EQ(frames.back().to_string(), encode(ClientMessage{HealthRequest{}}));
  Client mallory(endpoint, as("mallory"));
  EXPECT_NE(error_of([&] { mallory.receive(10s); }).find("refused"), std::string::npos);
  EXPECT_EQ(zap->refused(), 1);
  EXPECT_EQ(zap->accepted(), 1);
}

TEST_F(CurveFrontEnd, ClientKeyFilesAreCheckedBeforeConnecting) {
  ClientOptions o = as("alice");
  o.curve.server_public_key_file.clear();
  EXPECT_NE(error_of([&] { Client c("tcp://127.0.0.1:1", o); }).find("needs both"),
            std::string::npos);
  fs::permissions(dir_.path() / "alice.key", static_cast<fs::perms>(0604));
  EXPECT_NE(error_of([&] { Client c("tcp://127.0.0.1:1", as("alice")); }).find("chmod 600"),
            std::string::npos);
}

}  // namespace
}  // namespace shardserve::api
