#pragma once
// The project's one error type. Every failure that a user can cause (bad file, bad config,
// bad request) or that a library reports (CUDA, NCCL, MPI, ZeroMQ) becomes a shardserve::Error
// whose message names the operation and the values involved, so a log line alone says what
// went wrong. Code throws; the process boundary (main, a request handler) catches and reports.
#include <fmt/format.h>

#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>
#include <utility>

namespace shardserve {

class Error : public std::runtime_error {
 public:
  explicit Error(std::string message) : std::runtime_error(std::move(message)) {}
};

// Throws Error with an fmt-style message.
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

// Checks a condition that input data must satisfy; the message says what was expected.
template <typename... Args>
void require(bool condition, fmt::format_string<Args...> format, Args&&... args) {
  if (!condition) throw Error(fmt::format(format, std::forward<Args>(args)...));
}

// The process boundary of a command-line tool: main() { return run_reporting_errors("name",
// run, argc, argv); }. An exception escaping run becomes one line "name: message" on stderr and
// exit status 1.
inline int run_reporting_errors(const char* program, int (*run)(int, char**), int argc,
                                char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", program, e.what());
    return 1;
  }
}

}  // namespace shardserve
