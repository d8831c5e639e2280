#include "kernels/cpu/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace shardserve::kernels::cpu {
namespace {

std::vector<float> penalised_logits(const float* logits, int64_t vocab,
                                    const messages::SamplingParams& p,
                                    const PenaltyHistory& h) {
  std::vector<float> out(logits, logits + vocab);
  if (p.repetition_penalty != 1.0f) {
    // CTRL / transformers rule: shrink the logit of every token already present.
    for (int32_t t : h.seen_tokens) {
      float& v = out[t];
      v = v < 0 ? v * p.repetition_penalty : v / p.repetition_penalty;
    }
  }
  if (p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f) {
    for (auto [t, count] : h.output_counts) {
      out[t] -= p.frequency_penalty * static_cast<float>(count) +
                p.presence_penalty * (count > 0 ? 1.0f : 0.0f);
    }
  }
  return out;
}

int32_t argmax(const std::vector<float>& v) {
  // Lowest id wins ties, as torch.argmax does.
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

}  // namespace

std::vector<double> sampling_distribution(const float* logits, int64_t vocab,
                                          const messages::SamplingParams& p,
                                          const PenaltyHistory& h) {
  const std::vector<float> scores = penalised_logits(logits, vocab, p, h);
  std::vector<double> probs(vocab, 0.0);
  if (p.greedy()) {
    probs[argmax(scores)] = 1.0;
    return probs;
  }
  const double temperature = static_cast<double>(p.temperature);
  const double max_scaled = *std::max_element(scores.begin(), scores.end()) / temperature;
  auto weight_of = [&](int32_t t) { return std::exp(scores[t] / temperature - max_scaled); };
  const bool top_k = p.top_k > 0 && p.top_k < vocab;
  if (!top_k && p.top_p >= 1.0f && p.min_p <= 0.0f) {
    // Nothing is cut, so no order is needed: every token keeps its weight, summed in id order.
    // (Sorting the vocabulary for this cost 0.7 ms a token at 8k entries, 16 ms at Llama 3's
    // 128k: docs/PERF.md.)
    double total = 0;
    for (int64_t t = 0; t < vocab; ++t) total += probs[t] = weight_of(static_cast<int32_t>(t));
    for (double& q : probs) q /= total;
    return probs;
  }
  // Candidates in descending order of score, ties by id (the GPU's stable sort's order). Only a
  // prefix is ever ordered: the top_k, or as far as top_p and min_p look, doubling from 64 (a
  // nucleus is usually far smaller than the vocabulary).
  std::vector<int32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  auto before = [&](int32_t a, int32_t b) {
    return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
  };
  int64_t sorted = 0;
  auto sort_prefix = [&](int64_t n) {
    n = std::min(n, vocab);
    if (n <= sorted) return;
    std::partial_sort(order.begin() + sorted, order.begin() + n, order.end(), before);
    sorted = n;
  };
  const int64_t limit = top_k ? p.top_k : vocab;
  sort_prefix(top_k ? limit : 64);
  std::vector<double> weight;  // of the ordered prefix
  auto weight_at = [&](int64_t i) {
    if (i >= sorted) sort_prefix(std::max(2 * sorted, i + 1));
    while (static_cast<int64_t>(weight.size()) <= i)
      weight.push_back(weight_of(order[weight.size()]));
    return weight[i];
  };
  // The total the top_p cut is measured against: the top_k candidates' (in order), else every
  // token's (in id order: no sort needed).
  double total = 0;
  if (top_k) {
    for (int64_t i = 0; i < limit; ++i) total += weight_at(i);
  } else {
    for (int64_t t = 0; t < vocab; ++t) total += weight_of(static_cast<int32_t>(t));
  }
  int64_t keep = limit;
  if (p.top_p < 1.0f) {
    // Smallest prefix whose probability reaches top_p (at least one token).
    double cumulative = 0;
    for (int64_t i = 0; i < keep; ++i) {
      cumulative += weight_at(i) / total;
      if (cumulative >= p.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  if (p.min_p > 0.0f) {
    // weight_at(0) is the most likely token's; the ratio is unchanged by renormalisation.
    const double least = p.min_p * weight_at(0);
    int64_t cut = 1;
    while (cut < keep && weight_at(cut) >= least) ++cut;
    keep = cut;
  }
  double kept_total = 0;
  for (int64_t i = 0; i < keep; ++i) kept_total += weight_at(i);
  for (int64_t i = 0; i < keep; ++i) probs[order[i]] = weight_at(i) / kept_total;
  return probs;
}

int32_t sample_from_distribution(std::span<const double> probs, double uniform) {
  // Inverse CDF in id order: deterministic for a given uniform.
  double cumulative = 0;
  int32_t last_nonzero = 0;
  for (std::size_t t = 0; t < probs.size(); ++t) {
    if (probs[t] == 0.0) continue;
    last_nonzero = static_cast<int32_t>(t);
    cumulative += probs[t];
    if (uniform < cumulative) return static_cast<int32_t>(t);
  }
  return last_nonzero;  // rounding left the sum just under the draw
}

Sample sample_token(const float* logits, int64_t vocab, const messages::SamplingParams& p,
                    const PenaltyHistory& h, double uniform) {
  int32_t token = 0;
  if (p.greedy()) {
    token = argmax(penalised_logits(logits, vocab, p, h));
  } else {
    token = sample_from_distribution(sampling_distribution(logits, vocab, p, h), uniform);
  }
  return describe_token(logits, vocab, token, p.logprobs);
}

void add_to_history(PenaltyHistory& h, int32_t token, bool output) {
  if (std::find(h.seen_tokens.begin(), h.seen_tokens.end(), token) == h.seen_tokens.end())
    h.seen_tokens.push_back(token);
  if (!output) return;
  for (auto& [t, count] : h.output_counts) {
    if (t == token) {
      ++count;
      return;
    }
  }
  h.output_counts.emplace_back(token, 1);
}

DraftVerdict verify_draft_token(std::span<const double> target, std::span<const double> draft,
                                int32_t d, double u_accept, double u_resample) {
  const double draft_d = draft.empty() ? 1.0 : draft[d];
  // min(1, target/draft) as "u < target / draft", written without the division so that a
  // zero draft probability (which the draw cannot produce) still behaves: accept iff target > 0.
  if (u_accept * draft_d < target[d]) return {true, d};
  // Residual max(0, target - draft), normalised by its sum. It is not all zero: a rejection
  // needs target(d) < draft(d), and then sum(max(0, target - draft)) = sum(max(0, draft -
  // target)) >= draft(d) - target(d) > 0. Rounding aside; then fall back to the target.
  std::vector<double> residual(target.size());
  double total = 0;
  for (std::size_t t = 0; t < target.size(); ++t) {
    const double q = draft.empty() ? (static_cast<int32_t>(t) == d ? 1.0 : 0.0) : draft[t];
    residual[t] = std::max(0.0, target[t] - q);
    total += residual[t];
  }
  if (!(total > 0)) return {false, sample_from_distribution(target, u_resample)};
  return {false, sample_from_distribution(residual, u_resample * total)};
}

Sample describe_token(const float* logits, int64_t vocab, int32_t token, int32_t num_logprobs) {
  Sample s;
  s.token = token;
  // Raw log-softmax for the reported logprobs.
  const float max_logit = *std::max_element(logits, logits + vocab);
  double denom = 0;
  for (int64_t t = 0; t < vocab; ++t) denom += std::exp(static_cast<double>(logits[t]) - max_logit);
  const double log_denom = std::log(denom) + max_logit;
  s.logprob = static_cast<float>(logits[s.token] - log_denom);
  if (num_logprobs > 0) {
    std::vector<int32_t> ids(vocab);
    std::iota(ids.begin(), ids.end(), 0);
    const int64_t n = std::min<int64_t>(num_logprobs, vocab);
    std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    for (int64_t i = 0; i < n; ++i) {
      s.top_ids.push_back(ids[i]);
      s.top_logprobs.push_back(static_cast<float>(logits[ids[i]] - log_denom));
    }
  }
  return s;
}

}  // namespace shardserve::kernels::cpu
