#include "api/curve.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>
#include <zmq_addon.hpp>

#include "common/error.h"

namespace shardserve::api {
namespace {

constexpr std::size_t kZ85Length = 40;
constexpr std::size_t kKeyBytes = 32;
constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";  // fixed by RFC 27
constexpr const char* kZapDomain = "shardserve";

std::array<uint8_t, kKeyBytes> decode_key(const std::string& z85, std::string_view what) {
  std::array<uint8_t, kKeyBytes> out{};
  require(z85.size() == kZ85Length && zmq_z85_decode(out.data(), z85.c_str()) != nullptr,
          "{}: expected one Z85-encoded CURVE key of {} characters, got {} character(s)", what,
          kZ85Length, z85.size());
  return out;
}

std::string encode_key(const uint8_t* bytes) {
  char text[kZ85Length + 1] = {};
  require(zmq_z85_encode(text, bytes, kKeyBytes) != nullptr, "zmq_z85_encode failed");
  return std::string(text, kZ85Length);
}

void require_curve() {
  require(zmq_has("curve") != 0,
          "this libzmq has no CURVE support (Debian's libzmq5 has it: zmq_has(\"curve\") is 0)");
}

void set_binary(zmq::socket_t& socket, int option, const std::array<uint8_t, kKeyBytes>& key,
                const char* name) {
  if (zmq_setsockopt(socket.handle(), option, key.data(), key.size()) != 0)
    fail("zmq_setsockopt({}) failed: {}", name, zmq_strerror(zmq_errno()));
}

void write_exclusive(const std::filesystem::path& path, const std::string& text, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  require(fd >= 0, "cannot create {}: {}{}", path.string(), std::strerror(errno),
          errno == EEXIST ? " (an existing key file is never overwritten)" : "");
  const ssize_t n = ::write(fd, text.data(), text.size());
  const int write_errno = errno;
  ::close(fd);
  require(n == static_cast<ssize_t>(text.size()), "cannot write {}: {}", path.string(),
          std::strerror(write_errno));
}

}  // namespace

CurveKeyPair generate_curve_keypair() {
  require_curve();
  char pub[kZ85Length + 1] = {}, sec[kZ85Length + 1] = {};
  require(zmq_curve_keypair(pub, sec) == 0, "zmq_curve_keypair failed: {}",
          zmq_strerror(zmq_errno()));
  return {std::string(pub, kZ85Length), std::string(sec, kZ85Length)};
}

std::string curve_public_key_of(const std::string& secret_z85, std::string_view what) {
  require_curve();
  decode_key(secret_z85, what);
  char pub[kZ85Length + 1] = {};
  require(zmq_curve_public(pub, secret_z85.c_str()) == 0, "{}: zmq_curve_public failed: {}", what,
          zmq_strerror(zmq_errno()));
  return std::string(pub, kZ85Length);
}

void write_curve_key_files(const std::filesystem::path& stem, const CurveKeyPair& keys) {
  const auto key = std::filesystem::path(stem.string() + ".key");
  const auto pub = std::filesystem::path(stem.string() + ".pub");
  require(!std::filesystem::exists(pub), "{} exists: an existing key file is never overwritten",
          pub.string());
  write_exclusive(key,
                  "# shardserve CURVE secret key (Z85). Keep it private: mode 0600.\n" +
                      keys.secret_key + "\n",
                  0600);
  write_exclusive(pub, "# shardserve CURVE public key (Z85)\n" + keys.public_key + "\n", 0644);
}

void require_private_file(const std::filesystem::path& path, std::string_view what) {
  struct stat st {};
  // errno is read after stat(): function arguments have no evaluation order.
  if (::stat(path.c_str(), &st) != 0) fail("{}: {}", what, std::strerror(errno));
  const unsigned mode = st.st_mode & 07777;
  require((mode & 007) == 0, "{}: readable by others (mode {:04o}); it must be private: chmod 600 it",
          what, mode);
  if ((mode & 070) == 0) return;
  bool ours = st.st_gid == getegid();
  const int n = getgroups(0, nullptr);
  std::vector<gid_t> groups(static_cast<std::size_t>(std::max(n, 0)));
  if (n > 0 && getgroups(n, groups.data()) == n)
    for (gid_t g : groups) ours = ours || g == st.st_gid;
  require(ours,
          "{}: readable by group {} (mode {:04o}), which this process is not in; it must be "
          "private: chmod 600 it",
          what, st.st_gid, mode);
}

std::string read_curve_key_file(const std::filesystem::path& path, bool secret) {
  const std::string what = fmt::format("{} key file {}", secret ? "secret" : "public", path.string());
  struct stat st {};
  // errno is read after stat(): function arguments have no evaluation order.
  if (::stat(path.c_str(), &st) != 0) fail("{}: {}", what, std::strerror(errno));
  require(S_ISREG(st.st_mode), "{}: not a regular file", what);
  if (secret) require_private_file(path, what);
  std::ifstream in(path);
  require(static_cast<bool>(in), "{}: cannot be read", what);
  std::string line, key;
  int keys = 0;
  while (std::getline(in, line)) {
    const auto b = line.find_first_not_of(" \t\r");
    if (b == std::string::npos || line[b] == '#') continue;
    const auto e = line.find_last_not_of(" \t\r");
    key = line.substr(b, e - b + 1);
    ++keys;
  }
  require(keys == 1, "{}: expected one key line (Z85, {} characters), found {}", what, kZ85Length,
          keys);
  decode_key(key, what);
  return key;
}

std::map<std::string, std::string> read_authorized_keys(const std::filesystem::path& dir,
                                                        bool strict) {
  std::error_code ec;
  require(std::filesystem::is_directory(dir, ec),
          "security.authorized_clients_dir = '{}' is not a directory", dir.string());
  std::map<std::string, std::string> keys;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().extension() != ".pub") continue;
    try {
      keys.emplace(read_curve_key_file(entry.path(), false), entry.path().stem().string());
    } catch (const Error& e) {
      if (strict) throw;
      spdlog::warn("CURVE: ignoring {}", e.what());
    }
  }
  require(!ec, "security.authorized_clients_dir = '{}': cannot be listed: {}", dir.string(),
          ec.message());
  return keys;
}

CurveClientKeys load_curve_client_keys(const CurveClientOptions& o) {
  CurveClientKeys k;
  if (!o.enabled()) return k;
  require(!o.server_public_key_file.empty() && !o.client_secret_key_file.empty(),
          "CURVE needs both the server's public key file and this client's secret key file (got "
          "server key '{}', client key '{}')",
          o.server_public_key_file, o.client_secret_key_file);
  k.server_public = read_curve_key_file(o.server_public_key_file, false);
  k.client_secret = read_curve_key_file(o.client_secret_key_file, true);
  k.client_public = curve_public_key_of(
      k.client_secret, fmt::format("secret key file {}", o.client_secret_key_file));
  return k;
}

void apply_curve_client(zmq::socket_t& socket, const CurveClientKeys& k) {
  if (!k.enabled()) return;
  set_binary(socket, ZMQ_CURVE_SERVERKEY, decode_key(k.server_public, "server public key"),
             "ZMQ_CURVE_SERVERKEY");
  set_binary(socket, ZMQ_CURVE_PUBLICKEY, decode_key(k.client_public, "client public key"),
             "ZMQ_CURVE_PUBLICKEY");
  set_binary(socket, ZMQ_CURVE_SECRETKEY, decode_key(k.client_secret, "client secret key"),
             "ZMQ_CURVE_SECRETKEY");
}

HandshakeMonitor::HandshakeMonitor(zmq::context_t& context, zmq::socket_t& watched,
                                   std::string endpoint, bool curve)
    : endpoint_(std::move(endpoint)), curve_(curve), monitor_(context, zmq::socket_type::pair) {
  const std::string address =
      fmt::format("inproc://shardserve-handshake-{}", static_cast<const void*>(this));
  require(zmq_socket_monitor(watched.handle(), address.c_str(),
                             ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                 ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) == 0,
          "zmq_socket_monitor({}) failed: {}", address, zmq_strerror(zmq_errno()));
  monitor_.set(zmq::sockopt::linger, 0);
  monitor_.connect(address);
}

std::string HandshakeMonitor::read_failure() {
  std::vector<zmq::message_t> f;
  if (!zmq::recv_multipart(monitor_, std::back_inserter(f), zmq::recv_flags::dontwait) ||
      f.empty() || f[0].size() < 6)
    return "";
  uint16_t event = 0;
  uint32_t value = 0;
  std::memcpy(&event, f[0].data(), 2);
  std::memcpy(&value, static_cast<const char*>(f[0].data()) + 2, 4);
  switch (event) {
    case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
      return fmt::format(
          "the server at {} refused this client (ZAP status {}): its CURVE public key is not in "
          "the server's security.authorized_clients_dir",
          endpoint_, value);
    case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
      if (value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
        return fmt::format(
            "the handshake with {} failed: the server and this client disagree on CURVE (one has "
            "it on, the other off; a CURVE server refuses clients without CURVE keys)",
            endpoint_);
      return fmt::format("the handshake with {} failed (ZMTP protocol error 0x{:08x}{})", endpoint_,
                         value,
                         value == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC
                             ? ": a cryptographic check failed, is the server's public key right?"
                             : "");
    case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
      // The server dropped the connection mid-handshake; which side noticed the mismatch first
      // is a race, so say what usually causes it.
      return fmt::format("the handshake with {} failed (errno {}: {}): the server dropped the "
                         "connection, {}",
                         endpoint_, value, zmq_strerror(static_cast<int>(value)),
                         curve_ ? "is the server's public key file the right one?"
                                : "as a CURVE server does to clients without CURVE keys");
    default:
      return "";
  }
}

bool is_local_endpoint(std::string_view endpoint) {
  if (endpoint.starts_with("ipc://") || endpoint.starts_with("inproc://")) return true;
  if (!endpoint.starts_with("tcp://")) return false;
  std::string_view host = endpoint.substr(6);
  // tcp://[::1]:5555, tcp://127.0.0.1:5555, tcp://localhost:*
  if (host.starts_with("[")) {
    const auto close = host.find(']');
    return close != std::string_view::npos && host.substr(1, close - 1) == "::1";
  }
  host = host.substr(0, host.rfind(':'));
  if (host == "localhost" || host == "::1") return true;
  if (!host.starts_with("127.")) return false;
  int dots = 0;
  for (char c : host) {
    if (c == '.') ++dots;
    else if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  }
  return dots == 3;
}

ZapHandler::ZapHandler(zmq::context_t& context, std::filesystem::path authorized_dir)
    : dir_(std::move(authorized_dir)), socket_(context, zmq::socket_type::rep) {
  const auto keys = read_authorized_keys(dir_, true);
  if (keys.empty())
    spdlog::warn("CURVE: no client is authorized yet: {} has no .pub file", dir_.string());
  socket_.set(zmq::sockopt::linger, 0);
  try {
    socket_.bind(kZapEndpoint);
  } catch (const zmq::error_t& e) {
    fail("CURVE: cannot bind the ZAP handler at {}: {}", kZapEndpoint, e.what());
  }
  // The socket moves to the handler's thread here; thread creation orders the accesses.
  thread_ = std::thread([this] { run(); });
}

ZapHandler::~ZapHandler() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

void ZapHandler::run() {
  while (!stop_.load()) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    try {
      // Bounded so the destructor is noticed; ZAP requests arrive once per connection.
      zmq::poll(&item, 1, std::chrono::milliseconds(100));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      spdlog::critical("CURVE: ZAP handler poll failed: {}", e.what());
      return;
    }
    if (!(item.revents & ZMQ_POLLIN)) continue;
    std::vector<zmq::message_t> f;
    if (!zmq::recv_multipart(socket_, std::back_inserter(f), zmq::recv_flags::dontwait)) continue;
    // RFC 27: version, request id, domain, address, routing id, mechanism, credentials...
    std::string status = "400", text, user;
    const std::string address = f.size() > 3 ? f[3].to_string() : "?";
    if (f.size() < 6 || f[0].to_string_view() != "1.0") {
      text = "malformed ZAP request";
    } else if (f[5].to_string_view() != "CURVE") {
      text = "CURVE required";
    } else if (f.size() < 7 || f[6].size() != kKeyBytes) {
      text = "no CURVE client key";
    } else {
      const std::string key = encode_key(static_cast<const uint8_t*>(f[6].data()));
      std::map<std::string, std::string> allowed;
      try {
        allowed = read_authorized_keys(dir_, false);
      } catch (const Error& e) {
        spdlog::error("CURVE: {}", e.what());  // refused: an unreadable list allows no one
      }
      if (auto it = allowed.find(key); it != allowed.end()) {
        status = "200";
        text = "OK";
        user = it->second;
      } else {
        text = fmt::format("its public key {} is not in {}", key, dir_.string());
      }
    }
    if (status == "200") {
      accepted_.fetch_add(1);
      spdlog::info("CURVE: client '{}' from {} authorized", user, address);
    } else {
      refused_.fetch_add(1);
      spdlog::warn("CURVE: refused a client from {}: {}", address, text);
      text = "not authorized";  // the client learns no more than that
    }
    const std::string request_id = f.size() > 1 ? f[1].to_string() : "";
    const std::string frames[] = {"1.0", request_id, status, text, user, ""};
    try {
      for (std::size_t i = 0; i < 6; ++i)
        socket_.send(zmq::buffer(frames[i]), i + 1 < 6 ? zmq::send_flags::sndmore
                                                       : zmq::send_flags::none);
    } catch (const zmq::error_t& e) {
      spdlog::error("CURVE: cannot answer a ZAP request: {}", e.what());
    }
  }
}

std::unique_ptr<ZapHandler> secure_server_socket(zmq::context_t& context, zmq::socket_t& socket,
                                                 const CurveServerOptions& o,
                                                 std::string_view endpoint) {
  if (!o.enabled()) {
    require(is_local_endpoint(endpoint) || o.allow_plaintext,
            "refusing to serve {} without CURVE: only loopback is served in plain text. Set "
            "security.curve_secret_key_file and security.authorized_clients_dir (docs/deploy.md), "
            "or security.allow_plaintext = true for a network you trust",
            endpoint);
    if (!is_local_endpoint(endpoint))
      spdlog::warn("front end: {} is served WITHOUT CURVE (security.allow_plaintext = true): "
                   "anyone who reaches it may submit",
                   endpoint);
    return nullptr;
  }
  require_curve();
  require(!o.authorized_clients_dir.empty(),
          "security.curve_secret_key_file is set but security.authorized_clients_dir is not: name "
          "the directory of the allowed clients' .pub files");
  const std::string secret = read_curve_key_file(o.secret_key_file, true);
  const std::string pub =
      curve_public_key_of(secret, fmt::format("secret key file {}", o.secret_key_file));
  if (!o.public_key_file.empty()) {
    const std::string listed = read_curve_key_file(o.public_key_file, false);
    require(listed == pub,
            "security.curve_public_key_file {} holds {}, but the secret key {} belongs to {}: the "
            "two files are not one pair",
            o.public_key_file, listed, o.secret_key_file, pub);
  }
  auto zap = std::make_unique<ZapHandler>(context, o.authorized_clients_dir);
  socket.set(zmq::sockopt::curve_server, 1);
  set_binary(socket, ZMQ_CURVE_SECRETKEY, decode_key(secret, "server secret key"),
             "ZMQ_CURVE_SECRETKEY");
  socket.set(zmq::sockopt::zap_domain, kZapDomain);
  spdlog::info("front end: CURVE on (server public key {}; clients allowed from {})", pub,
               o.authorized_clients_dir);
  return zap;
}

}  // namespace shardserve::api
