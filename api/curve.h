#pragma once
// CURVE security for the ZeroMQ job API: libzmq's own CurveZMQ (encryption and server
// authentication) plus a ZAP handler (libzmq's ZeroMQ Authentication Protocol, RFC 27) that lets
// in only clients whose public key is in an allow-list directory. No cryptography here: keys
// come from zmq_curve_keypair / zmq_curve_public, the handshake and the traffic are libzmq's.
//
// Key files (docs/deploy.md): one Z85 key (40 characters) on one line; lines starting with '#'
// are comments. `NAME.key` holds a secret key and must not be readable by group or others
// (like ssh, a readable secret key is refused; see require_private_file); `NAME.pub` holds the
// public key. A server's or a
// client's public key is derived from its secret key, so a client needs its own `.key` and the
// server's `.pub`; the server needs its `.key` and the directory of the clients' `.pub` files.
// Keys are never taken on a command line (they would show in `ps`): only file names are.
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <map>
#include <string>
#include <string_view>
#include <thread>
#include <zmq.hpp>

namespace shardserve::api {

struct CurveKeyPair {
  std::string public_key;  // Z85, 40 characters
  std::string secret_key;
};

// A fresh key pair from libzmq (zmq_curve_keypair). Throws when libzmq lacks CURVE.
CurveKeyPair generate_curve_keypair();
// The public key of a secret key (zmq_curve_public); throws naming `what` for a bad key.
std::string curve_public_key_of(const std::string& secret_z85, std::string_view what);
// Writes `stem`.key (mode 0600, created exclusively: an existing file is never overwritten)
// and `stem`.pub (0644). Returns the two paths' stem-relative names for messages.
void write_curve_key_files(const std::filesystem::path& stem, const CurveKeyPair& keys);

// Refuses a secret file others can read, or that a group this process is not in can read (a
// group of our own is allowed: Kubernetes' fsGroup and a service's own group work that way).
// Throws naming `what`, the mode and the fix.
void require_private_file(const std::filesystem::path& path, std::string_view what);

// Reads one key file. `secret`: the file must not be group/other-readable. Throws naming the
// file and what is wrong ("not found", "expected one Z85 key of 40 characters", ...).
std::string read_curve_key_file(const std::filesystem::path& path, bool secret);
// The public keys of every `*.pub` file in `dir` (other files are ignored), each mapped to its
// file's name without .pub. Throws naming the first bad file when `strict`; else bad files are
// logged and skipped.
std::map<std::string, std::string> read_authorized_keys(const std::filesystem::path& dir,
                                                        bool strict);

// The server side, as the [security] section of the service configuration names it.
struct CurveServerOptions {
  std::string secret_key_file;         // "": CURVE off
  std::string public_key_file;         // optional: checked against the secret key's
  std::string authorized_clients_dir;  // required with CURVE: the allowed clients' *.pub
  // Lets a front end without CURVE listen on an address other than loopback (a network the
  // operator trusts). Off: such a bind is refused.
  bool allow_plaintext = false;
  bool enabled() const { return !secret_key_file.empty(); }
};

// The client side: the server's public key and the client's own secret key, both files.
struct CurveClientOptions {
  std::string server_public_key_file;  // "": CURVE off
  std::string client_secret_key_file;
  bool enabled() const { return !server_public_key_file.empty() || !client_secret_key_file.empty(); }
};

// The keys themselves, read once (so a bad file fails where it is named, not in an I/O thread).
struct CurveClientKeys {
  std::string server_public, client_public, client_secret;
  bool enabled() const { return !server_public.empty(); }
};
CurveClientKeys load_curve_client_keys(const CurveClientOptions& options);
// Sets ZMQ_CURVE_SERVERKEY / PUBLICKEY / SECRETKEY; nothing when CURVE is off. Before connect().
void apply_curve_client(zmq::socket_t& socket, const CurveClientKeys& keys);

// Watches one socket's failed handshakes through a libzmq socket monitor (an inproc PAIR), so a
// client refused by the server's ZAP handler or disagreeing on CURVE says so instead of only
// timing out. Create it before the watched socket connects; destroy it before that socket.
class HandshakeMonitor {
 public:
  // `curve`: the watched socket has CURVE keys (the messages' hints depend on it).
  HandshakeMonitor(zmq::context_t& context, zmq::socket_t& watched, std::string endpoint,
                   bool curve);
  zmq::socket_t& socket() { return monitor_; }
  // Reads one event (call when socket() polls readable): the failure described, "" for none.
  std::string read_failure();

 private:
  std::string endpoint_;
  bool curve_;
  zmq::socket_t monitor_;
};

// True for endpoints only this host can reach: ipc://, inproc://, tcp:// on 127.0.0.0/8, ::1
// or localhost.
bool is_local_endpoint(std::string_view endpoint);

// Answers libzmq's ZAP requests for one context: a REP socket on inproc://zeromq.zap.01 served
// by its own thread. CURVE clients whose key is in the directory get 200 (the user id is the
// key file's name without .pub); everyone else 400. The directory is read again on every
// handshake, so adding or removing a client's .pub needs no restart.
class ZapHandler {
 public:
  // Binds the ZAP endpoint (before any CURVE socket of `context` binds) and reads the directory
  // strictly (a bad .pub file is an error at start-up).
  ZapHandler(zmq::context_t& context, std::filesystem::path authorized_dir);
  ~ZapHandler();
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

  int64_t accepted() const { return accepted_.load(); }
  int64_t refused() const { return refused_.load(); }

 private:
  void run();
  std::filesystem::path dir_;
  zmq::socket_t socket_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> accepted_{0}, refused_{0};
  std::thread thread_;
};

// Makes `socket` a CURVE server with `options`' keys (ZMQ_CURVE_SERVER, ZMQ_CURVE_SECRETKEY,
// ZMQ_ZAP_DOMAIN) and returns the ZAP handler that must live as long as the socket; with CURVE
// off returns null after checking that `endpoint` is local or allow_plaintext is set.
std::unique_ptr<ZapHandler> secure_server_socket(zmq::context_t& context, zmq::socket_t& socket,
                                                 const CurveServerOptions& options,
                                                 std::string_view endpoint);

}  // namespace shardserve::api
