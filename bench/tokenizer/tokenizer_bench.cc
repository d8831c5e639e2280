// Encode and decode throughput of a model directory's tokenizer on a text file, repeated until
// at least --bytes of input. Median of --repeats runs; prints a JSON object (one per model) and,
// with --markdown, a table row. Usage:
//   tokenizer_bench --text FILE --model DIR [--model DIR ...] [--bytes N] [--repeats N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/tokenizer/tokenizer.h"

namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <class F>
double median_seconds(int repeats, F&& f) {
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    const auto start = Clock::now();
    f();
    times.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  return median(times);
}

int usage(const char* why) {
  std::fprintf(stderr,
               "tokenizer_bench: %s\nusage: tokenizer_bench --text FILE --model DIR [--model DIR "
               "...] [--bytes N] [--repeats N]\n",
               why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string text_file;
  std::vector<std::string> models;
  size_t min_bytes = 1u << 20;
  int repeats = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) return usage(("missing value after " + arg).c_str());
    const std::string value = argv[++i];
    if (arg == "--text") text_file = value;
    else if (arg == "--model") models.push_back(value);
    else if (arg == "--bytes") min_bytes = std::stoul(value);
    else if (arg == "--repeats") repeats = std::max(1, std::stoi(value));
    else return usage(("unknown option " + arg).c_str());
  }
  if (text_file.empty() || models.empty()) return usage("--text and --model are required");

  std::ifstream in(text_file, std::ios::binary);
  if (!in) return usage(("cannot read " + text_file).c_str());
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string corpus = buffer.str();
  if (corpus.empty()) return usage((text_file + " is empty").c_str());
  std::string text;
  while (text.size() < min_bytes) text += corpus;

  nlohmann::json results = nlohmann::json::array();
  for (const std::string& dir : models) {
    const auto tokenizer = shardserve::model::load_tokenizer(dir);
    std::vector<int32_t> ids;
    const double encode_s = median_seconds(repeats, [&] { ids = tokenizer->encode(text, false); });
    std::string decoded;
    const double decode_s = median_seconds(repeats, [&] { decoded = tokenizer->decode(ids, false); });
    results.push_back({{"model", dir},
                       {"bytes", text.size()},
                       {"tokens", ids.size()},
                       {"round_trip", decoded == text},
                       {"encode_s", encode_s},
                       {"decode_s", decode_s},
                       {"encode_mb_per_s", text.size() / encode_s / 1e6},
                       {"encode_tokens_per_s", ids.size() / encode_s},
                       {"decode_tokens_per_s", ids.size() / decode_s},
                       {"repeats", repeats}});
  }
  std::cout << results.dump(2) << "\n";
  return 0;
}
